"""Purge: DELETE /jobs?type=&status=[&older_than=] deletes those jobs (never running ones) with all they left behind."""

import base64

import pytest
import webtest

import lazyboss
from support import rows, run_cli, submit

WORKER = {"Authorization": "Basic " + base64.b64encode(b"w1:").decode()}


def fail(app, job_type):
    """A job of `job_type` that ran once, logged a line and failed for good."""
    job = app.post_json("/jobs", {"type": job_type, "max_attempts": 1}, status=202).json
    claimed = app.post(f"/jobs/attempt?type={job_type}", headers=WORKER, status=201).json
    path = f"/jobs/{job['id']}/attempts/{claimed['attempt']}"
    app.put(f"{path}/progress", "data: working\n\n", headers={**WORKER, "Content-Type": "text/event-stream"})
    app.put_json(f"{path}/error", {"why": "no"}, headers=WORKER, status=201)
    return job["id"]


def test_purge_deletes_matching_jobs_with_attempts_logs_and_events_and_says_how_many(app, store):
    failed = [fail(app, "resize") for _ in range(3)]
    other_type = fail(app, "email")
    pending = app.post_json("/jobs", {"type": "resize"}, status=202).json["id"]
    answer = app.delete("/jobs?type=resize&status=failed")
    assert answer.status_int == 200 and answer.json == {"deleted": 3}
    for job_id in failed:
        assert app.get(f"/jobs/{job_id}", status=404)
    kept = {row[0] for row in rows(store, "SELECT id FROM jobs")}
    assert kept == {int(other_type), int(pending)}
    for table in ("attempts", "progress", "events"):
        assert rows(store, f"SELECT DISTINCT job_id FROM {table} WHERE job_id NOT IN (SELECT id FROM jobs)") == []
    assert rows(store, "SELECT COUNT(*) FROM progress")[0][0] == 1  # the email job's log is still there
    assert store.count_jobs() == {"email": {"failed": 1}, "resize": {"pending": 1}}


def test_types_and_statuses_repeat_and_nothing_else_is_touched(app, store):
    held = app.post_json("/jobs", {"type": "a", "hold": True}, status=202).json["id"]
    app.post_json("/jobs", [{"type": "a"}, {"type": "b"}, {"type": "c"}], status=202)
    cancelled = app.post_json("/jobs", {"type": "c"}, status=202).json["id"]
    app.post(f"/jobs/{cancelled}/cancel")
    assert app.delete("/jobs?type=a&type=b&status=pending&status=held").json == {"deleted": 3}
    assert rows(store, "SELECT type, status FROM jobs ORDER BY id") == [("c", "pending"), ("c", "cancelled")]
    assert app.get(f"/jobs/{held}", status=404)


def test_running_jobs_are_never_purged(app, store):
    app.post_json("/jobs", [{"type": "a"}, {"type": "a"}], status=202)
    app.post("/jobs/attempt", headers=WORKER, status=201)
    refused = app.delete("/jobs?type=a&status=processing", status=422).json
    assert "never purged" in refused["detail"]
    assert app.delete("/jobs?type=a&status=pending").json == {"deleted": 1}
    assert rows(store, "SELECT status FROM jobs") == [("processing",)]


@pytest.mark.parametrize(
    "query",
    ["", "?type=a", "?status=pending", "?type=a&status=running", "?type=a&status=pending&older_than=soon"],
)
def test_bad_purges_are_refused_and_delete_nothing(app, store, query):
    app.post_json("/jobs", {"type": "a"}, status=202)
    assert app.delete(f"/jobs{query}", status=422).json["error"] == "invalid"
    assert rows(store, "SELECT COUNT(*) FROM jobs")[0][0] == 1


def test_older_than_counts_finished_jobs_from_their_end_and_others_from_their_submit(app, clock):
    old_failure = fail(app, "t")  # submitted and failed at 0
    clock.advance(3 * 86400)
    old_pending = app.post_json("/jobs", {"type": "t"}, status=202).json["id"]  # submitted at 3 d
    late_failure = app.post_json("/jobs", {"type": "t", "max_attempts": 1}, status=202).json["id"]
    clock.advance(5 * 86400)  # now 8 d
    claimed = app.post("/jobs/attempt?type=t", headers=WORKER, status=201).json
    assert claimed["id"] == old_pending
    app.put_json(f"/jobs/{old_pending}/attempts/{claimed['attempt']}/result", 1, headers=WORKER, status=201)
    claimed = app.post("/jobs/attempt?type=t", headers=WORKER, status=201).json
    app.put_json(f"/jobs/{late_failure}/attempts/{claimed['attempt']}/error", {}, headers=WORKER, status=201)
    young_pending = app.post_json("/jobs", {"type": "t"}, status=202).json["id"]
    clock.advance(86400)  # now 9 d: the first failure ended 9 d ago, the second 1 d ago
    assert app.delete("/jobs?type=t&status=failed&status=pending&status=done&older_than=7d").json == {"deleted": 1}
    assert app.get(f"/jobs/{old_failure}", status=404)
    for job_id in (old_pending, late_failure, young_pending):
        app.get(f"/jobs/{job_id}", status=200)


def test_purge_goes_in_batches_and_takes_only_jobs_that_were_there_when_it_began(store, monkeypatch):
    monkeypatch.setattr(lazyboss, "_PURGE_BATCH", 4)
    store.submit_jobs([lazyboss.JobSpec(type="bulk") for _ in range(10)])
    commits = []
    delete_jobs = store._delete_jobs

    def during_each_batch(db, ids):
        delete_jobs(db, ids)
        commits.append(len(ids))
        if len(commits) == 1:  # another client keeps submitting while the purge runs
            store._insert_jobs(db, [lazyboss.JobSpec(type="bulk")])

    monkeypatch.setattr(store, "_delete_jobs", during_each_batch)
    assert store.purge_jobs(["bulk"], ["pending"]) == 10
    assert commits == [4, 4, 2]
    assert store.count_jobs() == {"bulk": {"pending": 1}}


def test_an_idempotency_key_is_forgotten_with_its_last_job(app):
    first = app.post_json("/jobs", {"type": "a"}, headers={"Idempotency-Key": "k"}, status=202).json
    app.delete("/jobs?type=a&status=pending")
    again = app.post_json("/jobs", {"type": "a"}, headers={"Idempotency-Key": "k"}, status=202).json
    assert again["id"] != first["id"]


def test_purging_needs_an_admin(store):
    secrets = {role: store.create_token(f"the-{role}", role) for role in lazyboss.ROLES}
    app = webtest.TestApp(lazyboss.make_app(store))
    store.submit_jobs([lazyboss.JobSpec(type="a")])
    for role in ("client", "worker"):
        headers = {"Authorization": f"Bearer {secrets[role]}"}
        assert app.delete("/jobs?type=a&status=pending", headers=headers, status=403).json["error"] == "forbidden"
    headers = {"Authorization": f"Bearer {secrets['admin']}"}
    assert app.delete("/jobs?type=a&status=pending", headers=headers).json == {"deleted": 1}


def test_the_command_line_asks_first_unless_told_yes(server):
    for _ in range(2):
        submit(server, "resize", max_attempts=1)
    client = server.client(user="w1:")
    for _ in range(2):
        claimed = client.request("POST", "/jobs/attempt").json
        client.request("PUT", f"/jobs/{claimed['id']}/attempts/{claimed['attempt']}/error", {})
    purge = ["purge", "--type", "resize", "--status", "failed", "--server", server.url]
    declined = run_cli(*purge, input="n\n")
    assert declined.returncode == 1
    assert "Delete the failed jobs of type resize (of 2 now)? [y/N]" in declined.stderr
    assert "nothing deleted" in declined.stderr
    assert run_cli(*purge, input="").returncode == 1  # no answer (stdin closed) is no
    assert run_cli(*purge, "--older-than", "7d", "--yes").stdout == "deleted 0 jobs\n"
    confirmed = run_cli(*purge, input="y\n")
    assert confirmed.returncode == 0 and confirmed.stdout == "deleted 2 jobs\n"
    assert server.client().request("GET", "/jobs?status=failed").json["jobs"] == []
    refused = run_cli("purge", "--type", "resize", "--status", "processing", "--yes", "--server", server.url)
    assert refused.returncode == 2 and "invalid choice" in refused.stderr
    bad_age = run_cli(*purge, "--older-than", "a while", "--yes")
    assert bad_age.returncode == 2 and "--older-than" in bad_age.stderr
