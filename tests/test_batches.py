"""Batch claims and batch reports: many jobs per request, each job still handed out and reported once."""

import base64
import concurrent.futures

import pytest

import lazyboss
from support import open_long_poll, rows, wait_until


def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


def submit_many(app, count, job_type="echo", **fields):
    return app.post_json("/jobs", [{"type": job_type, "parameters": {"n": n}, **fields} for n in range(count)]).json


# -- batch claims


def test_a_batch_claim_answers_every_job_with_its_attempt_in_queue_order(app, store):
    jobs = submit_many(app, 4)
    urgent = app.post_json("/jobs", {"type": "echo", "priority": 5}).json
    response = app.post("/jobs/attempt?max=3", headers=basic("w1"), status=201)
    assert "Location" not in response.headers  # one per job instead
    claimed = response.json["jobs"]
    assert [job["id"] for job in claimed] == [urgent["id"], jobs[0]["id"], jobs[1]["id"]]
    for job in claimed:
        assert (job["status"], job["assignee"], job["attempt"], job["attempts"]) == ("processing", "w1", "1", 1)
        assert job["location"] == f"/jobs/{job['id']}/attempts/1" and job["startedAt"] == job["updated_at"]
        assert app.get(job["location"]).json["status"] == "processing"
    assert rows(store, "SELECT COUNT(*) FROM attempts") == [(3,)]
    body = app.post_json("/jobs/attempt", {"max": 10, "types": ["echo"]}, headers=basic("w2"), status=201).json
    assert [job["id"] for job in body["jobs"]] == [jobs[2]["id"], jobs[3]["id"]]  # what was due, no more
    assert app.post("/jobs/attempt?max=10", status=204).body == b""


def test_a_batch_claim_of_some_types_takes_the_most_urgent_of_those_types(app):
    jobs = [
        app.post_json("/jobs", {"type": job_type, "priority": priority}).json
        for job_type, priority in [("a", 1), ("b", 3), ("c", 9), ("a", 2), ("b", 0), ("a", 5)]
    ]
    claimed = app.post("/jobs/attempt?type=a&type=b&max=4", status=201).json["jobs"]
    assert [job["id"] for job in claimed] == [jobs[5]["id"], jobs[1]["id"], jobs[3]["id"], jobs[0]["id"]]


def test_without_max_the_claim_answers_as_it_always_did(app):
    job = app.post_json("/jobs", {"type": "echo"}).json
    response = app.post("/jobs/attempt", headers=basic("w1"), status=201)
    assert response.headers["Location"] == f"/jobs/{job['id']}/attempts/1"
    assert "jobs" not in response.json and "location" not in response.json
    assert response.json["id"] == job["id"] and response.json["startedAt"].endswith("Z")


@pytest.mark.parametrize("query, body", [("max=0", None), ("max=1001", None), ("max=2.5", None), ("max=all", None)])
def test_a_bad_max_is_refused_and_claims_nothing(app, store, query, body):
    submit_many(app, 2)
    refused = app.post(f"/jobs/attempt?{query}", status=422).json
    assert refused["error"] == "invalid" and "max" in refused["detail"]
    for value in (0, "3", True, 1.5, 1001):
        assert "max" in app.post_json("/jobs/attempt", {"max": value}, status=422).json["detail"]
    assert rows(store, "SELECT COUNT(*) FROM attempts") == [(0,)]


def test_the_store_refuses_an_empty_batch_as_the_api_does(store):
    with pytest.raises(lazyboss.Invalid, match="an empty batch"):
        store.submit_jobs([], "key-1")
    assert store.count_jobs() == {} and rows(store, "SELECT * FROM submissions") == []


def test_a_batch_of_large_jobs_stops_at_about_a_mebibyte(store):
    big = {"blob": "x" * 400_000}
    store.submit_jobs([lazyboss.JobSpec("big", parameters=big) for _ in range(5)])
    first = store.claim_jobs("w1", limit=5)
    assert len(first) == 3  # 0.8 MB taken before the third, 1.2 MB before a fourth
    assert len(store.claim_jobs("w1", limit=5)) == 2
    store.submit_jobs([lazyboss.JobSpec("huge", parameters={"blob": "y" * 3_000_000})])
    assert len(store.claim_jobs("w1", limit=5)) == 1  # alone, however large


def test_concurrent_batch_claims_never_hand_a_job_out_twice(start_live, live_store):
    live = start_live(threads=16)
    submitter = live.client()
    for _ in range(5):
        batch = [{"type": "bulk", "parameters": n} for n in range(1000)]
        assert submitter.request("POST", "/jobs", batch).status == 202

    def claim_until_empty(worker):
        client, taken = live.client(user=worker), []
        while True:
            response = client.request("POST", "/jobs/attempt?type=bulk&max=50")
            if response.status == 204:
                return taken
            assert response.status == 201
            taken += [(job["id"], job["attempt"]) for job in response.json["jobs"]]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        claims = sum(pool.map(claim_until_empty, [f"w{n}" for n in range(8)]), [])
    assert len(claims) == 5000 and len({job for job, _ in claims}) == 5000
    assert all(attempt == "1" for _, attempt in claims)
    assert rows(live_store, "SELECT COUNT(*), COUNT(DISTINCT job_id) FROM attempts") == [(5000, 5000)]
    assert rows(live_store, "SELECT status, attempts, COUNT(*) FROM jobs GROUP BY 1, 2") == [("processing", 1, 5000)]
    assert rows(live_store, "SELECT COUNT(*) FROM events WHERE kind = 'claimed'") == [(5000,)]


def test_a_long_poll_waits_for_the_first_job_then_takes_what_is_due_up_to_max(live):
    worker = live.client(user="w1")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(worker.request, "POST", "/jobs/attempt?wait=20&max=3")
        wait_until(lambda: live.client().request("GET", "/stats").json["waiting_workers"] == 1, what="the poll")
        submitted = live.client().request("POST", "/jobs", [{"type": "echo", "parameters": n} for n in range(5)]).json
        answer = waiting.result(timeout=10)
    assert answer.status == 201
    assert [job["id"] for job in answer.json["jobs"]] == [job["id"] for job in submitted[:3]]


def test_every_job_of_a_batch_whose_answer_cannot_be_written_goes_back_at_once(live, monkeypatch):
    jobs = live.client().request("POST", "/jobs", [{"type": "echo", "parameters": n} for n in range(3)]).json
    open_long_poll(live, "wait=0.5&max=5", lose_it_on_claim=monkeypatch)
    reader = live.client()

    def all_back():
        now = [reader.request("GET", f"/jobs/{job['id']}").json for job in jobs]
        return all((job["status"], job["attempts"]) == ("pending", 1) for job in now)

    wait_until(all_back, timeout=5, what="the jobs to come back")
    monkeypatch.undo()
    again = live.client(user="w2").request("POST", "/jobs/attempt?max=5").json["jobs"]
    assert sorted((job["id"], job["attempt"]) for job in again) == sorted((job["id"], "2") for job in jobs)
    metrics = reader.request("GET", "/metrics").body.decode()
    assert 'lazyboss_claims_released_total{type="echo"} 3' in metrics


# -- batch reports


def claimed_batch(app, count, user="w1", **fields):
    submit_many(app, count, **fields)
    return app.post(f"/jobs/attempt?max={count}", headers=basic(user), status=201).json["jobs"]


def report(job, **outcome):
    return {"job": job["id"], "attempt": job["attempt"], **outcome}


def test_each_report_of_a_batch_succeeds_or_fails_alone(app, store, clock):
    for timeout in (300, 10, 300, 300):
        app.post_json("/jobs", {"type": "echo", "timeout": timeout})
    done, stale, retried, cancelled = app.post("/jobs/attempt?max=4", headers=basic("w1")).json["jobs"]
    theirs = claimed_batch(app, 1, user="w2")[0]
    app.post(f"/jobs/{cancelled['id']}/cancel")
    clock.advance(11)
    lazyboss.Reaper(store).run_once()  # `stale` expires
    body = [
        report(done, result={"ok": 1}),
        report(stale, result={"late": True}),
        report(retried, error={"boom": 1}),
        report(theirs, result={"not": "mine"}),
        report(cancelled, result=None),
        {"job": "99999", "attempt": "1", "result": None},
        {"job": done["id"], "attempt": "7", "error": None},
    ]
    answer = app.post_json("/jobs/reports", body, headers=basic("w1"), status=200).json["reports"]
    assert [item["status"] for item in answer] == [201, 409, 201, 403, 409, 404, 404]
    assert [item.get("error") for item in answer] == [
        None,
        "expired",
        None,
        "forbidden",
        "cancelled",
        "not_found",
        "not_found",
    ]
    assert answer[0]["job"]["status"] == "done" and answer[0]["job"]["result"] == {"ok": 1}
    assert answer[2]["job"]["status"] == "pending" and answer[2]["job"]["error"] == {"boom": 1}
    assert all(item["detail"] for item in answer if item["status"] != 201)
    assert app.get(f"/jobs/{theirs['id']}").json["status"] == "processing"  # another worker's: untouched
    assert app.get(f"/jobs/{stale['id']}").json["result"] is None


def test_a_batch_of_results_finishes_each_job_once(app, store):
    jobs = claimed_batch(app, 3)
    body = [report(job, result={"n": index}) for index, job in enumerate(jobs)]
    body.append(report(jobs[0], result={"n": 0}))  # sent again in the same batch: harmless
    body.append(report(jobs[1], error="too late"))  # an error after its result: refused
    answer = app.post_json("/jobs/reports", body, headers=basic("w1"), status=200).json["reports"]
    assert [item["status"] for item in answer] == [201, 201, 201, 201, 409]
    assert [item["job"]["result"] for item in answer[:4]] == [{"n": 0}, {"n": 1}, {"n": 2}, {"n": 0}]
    assert all(item["job"]["status"] == "done" for item in answer[:4]) and answer[4]["error"] == "finished"
    assert rows(store, "SELECT kind, COUNT(*) FROM events GROUP BY kind ORDER BY kind") == [
        ("claimed", 3),
        ("done", 3),
        ("submitted", 3),
    ]
    again = app.post_json("/jobs/reports", body[:3], headers=basic("w1"), status=200).json["reports"]
    assert [item["job"] for item in again] == [item["job"] for item in answer[:3]]  # resent: the same answers


def test_a_batch_report_over_ndjson(app):
    jobs = claimed_batch(app, 2)
    lines = "\n".join(lazyboss._encode(report(job, result=job["parameters"])) for job in jobs)
    answer = app.post("/jobs/reports", lines, headers={**basic("w1"), "Content-Type": "application/x-ndjson"})
    assert [item["job"]["status"] for item in answer.json["reports"]] == ["done", "done"]


@pytest.mark.parametrize(
    "bad",
    [
        {"job": "1", "result": 1},
        {"job": 1, "attempt": 1, "result": 1},
        {"job": "1", "attempt": "1"},
        {"job": "1", "attempt": "1", "result": 1, "error": 2},
        {"job": "1", "attempt": "1", "result": 1, "progress": 50},
        "1/1",
    ],
)
def test_a_batch_report_with_a_malformed_item_is_refused_whole_and_changes_nothing(app, store, bad):
    (job,) = claimed_batch(app, 1)
    refused = app.post_json("/jobs/reports", [report(job, result="fine"), bad], headers=basic("w1"), status=422)
    assert refused.json["error"] == "invalid" and refused.json["detail"].startswith("report 1: ")
    assert app.get(f"/jobs/{job['id']}").json["status"] == "processing"
    assert rows(store, "SELECT COUNT(*) FROM events WHERE kind = 'done'") == [(0,)]


@pytest.mark.parametrize("body", [{"job": "1", "attempt": "1", "result": 1}, [], "reports"])
def test_a_batch_report_is_a_list(app, body):
    assert "list of reports" in app.post_json("/jobs/reports", body, status=422).json["detail"]


def test_a_batch_report_needs_a_worker(app, store):
    (job,) = claimed_batch(app, 1)
    store.create_token("client", "client")
    secret = store.create_token("w1", "worker")
    client = store.create_token("viewer", "client")
    body = [report(job, result=1)]
    app.post_json("/jobs/reports", body, status=401)
    app.post_json("/jobs/reports", body, headers={"Authorization": f"Bearer {client}"}, status=403)
    answer = app.post_json("/jobs/reports", body, headers={"Authorization": f"Bearer {secret}"}).json
    assert answer["reports"][0]["status"] == 201
