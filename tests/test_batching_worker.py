"""The shell worker and the command line use batches: one claim for all free slots, reports that end together in
one request, and `lazyboss submit --batch` from NDJSON on stdin; `lazyboss.Worker` shares their engine."""

import subprocess
import sys
import threading

import lazyboss
from support import ROOT, WorkerProcess, running_worker, wait_until


def jobs_of(client, job_type):
    return client.request("GET", f"/jobs?type={job_type}&limit=100").json["jobs"]


def hold_the_first_report(live, monkeypatch):
    """Make the server's first report wait until `release` is set; the number of reports in each call."""
    calls, first_in, release = [], threading.Event(), threading.Event()
    report = live.store.report_attempts

    def held_first(worker, reports):
        calls.append(len(reports))
        if len(calls) == 1:  # the first report waits here: the others end meanwhile
            first_in.set()
            assert release.wait(20)
        return report(worker, reports)

    monkeypatch.setattr(live.store, "report_attempts", held_first)
    return calls, first_in, release


def one_claim_for_all(client, job_type):
    started = {
        client.request("GET", f"/jobs/{job['id']}/attempts").json[0]["started_at"] for job in jobs_of(client, job_type)
    }
    return len(started) == 1  # one claim, one transaction: one moment


def test_a_worker_claims_for_all_its_free_slots_in_one_call(live):
    client = live.client()
    client.request("POST", "/jobs", [{"type": "quick", "parameters": n} for n in range(4)])
    worker = WorkerProcess(live.url, "--type", "quick", "-c", "4", command=["true"])
    try:
        wait_until(lambda: all(job["status"] == "done" for job in jobs_of(client, "quick")), what="the jobs to end")
    finally:
        worker.stop()
    assert one_claim_for_all(client, "quick")


def test_reports_of_jobs_that_end_together_go_in_one_request(live, monkeypatch):
    client = live.client()
    client.request("POST", "/jobs", [{"type": "quick", "parameters": n} for n in range(4)])
    calls, first_in, release = hold_the_first_report(live, monkeypatch)
    worker = WorkerProcess(live.url, "--type", "quick", "-c", "4", command=["true"])
    try:
        assert first_in.wait(20)
        wait_until(lambda: len(worker.logged("finished job")) == 4, what="every command to end")
        release.set()
        wait_until(lambda: all(job["status"] == "done" for job in jobs_of(client, "quick")), what="the reports")
    finally:
        release.set()
        worker.stop()
    assert calls == [1, 3]
    assert all(job["result"]["return_code"] == 0 for job in jobs_of(client, "quick"))


def test_the_python_worker_claims_and_reports_in_batches_too(live, monkeypatch):
    client = live.client()
    client.request("POST", "/jobs", [{"type": "quick", "parameters": n} for n in range(4)])
    calls, first_in, release = hold_the_first_report(live, monkeypatch)
    worker = lazyboss.Worker(lazyboss.Client(live.url, user="py-worker:"), concurrency=4, grace=1)
    worker.task("quick")(lambda parameters, job: parameters * 10)
    with running_worker(worker):
        try:
            assert first_in.wait(20)
            wait_until(lambda: len(worker._engine.reports) == 3, what="the other three reports to wait for it")
            release.set()
            wait_until(lambda: all(job["status"] == "done" for job in jobs_of(client, "quick")), what="the reports")
        finally:
            release.set()
    assert calls == [1, 3]
    assert one_claim_for_all(client, "quick")
    assert sorted(job["result"] for job in jobs_of(client, "quick")) == [0, 10, 20, 30]


def submit_batch(url, stdin, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), "submit", "--server", url, "lines", "--batch", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_submit_batch_reads_ndjson_from_stdin_as_one_batch(live):
    finished = submit_batch(live.url, '{"n": 1}\n\n{"n": 2}\n["three"]\n', "--priority", "5")
    assert finished.returncode == 0, finished.stderr
    ids = finished.stdout.split()
    jobs = {job["id"]: job for job in jobs_of(live.client(), "lines")}
    assert sorted(ids, key=int) == ids and set(ids) == set(jobs)
    assert [jobs[job_id]["parameters"] for job_id in ids] == [{"n": 1}, {"n": 2}, ["three"]]
    assert all(jobs[job_id]["priority"] == 5 for job_id in ids)
    assert len({jobs[job_id]["created_at"] for job_id in ids}) == 1  # one submission, one transaction


def test_a_bad_line_submits_nothing(live):
    finished = submit_batch(live.url, '{"n": 1}\nnot json\n')
    assert finished.returncode == 2 and "line 2" in finished.stderr
    assert jobs_of(live.client(), "lines") == []
    assert submit_batch(live.url, "\n\n").returncode == 2
