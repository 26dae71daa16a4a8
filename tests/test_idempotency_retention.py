"""An Idempotency-Key's answer is its whole submission or a refusal: never part of a batch in its place."""

import pytest

from support import rows


def keyed(app, body, key, status=202):
    return app.post_json("/jobs", body, headers={"Idempotency-Key": key}, status=status)


def job_count(store):
    return rows(store, "SELECT COUNT(*) FROM jobs")[0][0]


def finish(app, job_type):
    claimed = app.post(f"/jobs/attempt?type={job_type}", status=201).json
    app.put_json(f"/jobs/{claimed['id']}/attempts/{claimed['attempt']}/result", {"ok": True}, status=201)
    return claimed["id"]


@pytest.mark.parametrize("deletion", ["retention", "purge"])
def test_a_batch_resent_after_some_of_its_jobs_were_deleted_is_refused_and_makes_nothing(app, store, clock, deletion):
    batch = keyed(app, [{"type": "a"}, {"type": "b"}], "R").json
    done = finish(app, "a")
    clock.advance(3600)
    if deletion == "retention":
        assert store.delete_finished_jobs(retain=60) == 1
    else:
        assert app.delete("/jobs?type=a&status=done").json == {"deleted": 1}
    app.get(f"/jobs/{done}", status=404)
    before = job_count(store)

    refused = keyed(app, [{"type": "a"}, {"type": "b"}], "R", status=409).json
    assert refused["error"] == "key_expired"
    assert "'R'" in refused["detail"] and "batch of 2" in refused["detail"] and "1 of which" in refused["detail"]
    assert keyed(app, {"type": "a"}, "R", status=409).json["error"] == "key_reused"
    assert job_count(store) == before
    assert app.get(f"/jobs/{batch[1]['id']}").json["status"] == "pending"  # the rest is untouched


def test_a_batch_whose_jobs_are_all_kept_is_answered_whole_as_they_are_now(app, store):
    batch = keyed(app, [{"type": "a"}, {"type": "b"}], "R").json
    finish(app, "a")
    again = keyed(app, [{"type": "a"}, {"type": "b"}], "R").json
    assert [job["id"] for job in again] == [job["id"] for job in batch]
    assert [job["status"] for job in again] == ["done", "pending"]
    assert job_count(store) == 2
