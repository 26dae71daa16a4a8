"""A worker whose result the type's result_schema refuses reports that as the attempt's error at once, instead
of leaving the attempt to run out its lease and the job to be handed out again for the same refusal."""

import lazyboss
from support import finished, running_worker, submit, wait_until
from test_batching_worker import hold_the_first_report, jobs_of

NEEDS_URL = {"type": "object", "required": ["url"]}


def test_the_shell_workers_refused_result_fails_the_job_at_once_saying_why(server, start_worker):
    assert server.client().request("PUT", "/types/r", {"result_schema": NEEDS_URL}).status == 200
    job_id = submit(server, "r", {"a": 1}, max_attempts=1)  # the lease stays 300 s: no expiry within the test
    start_worker("--type", "r", command=["cat"])
    job = finished(server, job_id, timeout=20)
    assert job["status"] == "failed" and job["attempts"] == 1
    assert job["error"]["error"] == "invalid_result" and "'url' is a required property" in job["error"]["detail"]
    assert job["error"]["result"]["return_code"] == 0  # what the command gave, kept for whoever looks into it


def test_reports_sent_together_are_each_turned_into_an_error(live, monkeypatch):
    client = live.client()
    assert client.request("PUT", "/types/r", {"result_schema": NEEDS_URL}).status == 200
    client.request("POST", "/jobs", [{"type": "r", "parameters": n, "max_attempts": 1} for n in range(3)])
    calls, first_in, release = hold_the_first_report(live, monkeypatch)
    worker = lazyboss.Worker(lazyboss.Client(live.url, user="py-worker:"), concurrency=3, grace=1)
    worker.task("r")(lambda n, job: {"url": "s3://x"} if n == 0 else {"n": n})
    with running_worker(worker):
        try:
            assert first_in.wait(20)
            wait_until(lambda: len(worker._engine.reports) == 2, what="the other two reports to wait for it")
            release.set()
            wait_until(lambda: all(job["status"] != "processing" for job in jobs_of(client, "r")), what="the reports")
        finally:
            release.set()
    assert 2 in calls  # the two that waited went in one call (the first may have been refused alone)
    jobs = {job["parameters"]: job for job in jobs_of(client, "r")}
    assert jobs[0]["status"] == "done"
    for n in (1, 2):
        assert jobs[n]["status"] == "failed" and jobs[n]["error"]["error"] == "invalid_result"
        assert jobs[n]["error"]["result"] == {"n": n}
