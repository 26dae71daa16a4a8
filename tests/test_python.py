"""lazyboss from Python: the Client against a real server, and Worker running Python functions."""

import signal
import subprocess
import sys
import threading
import time

import pytest

import lazyboss
from support import ROOT, ServerProcess, WorkerProcess, free_port, wait_until


@pytest.fixture
def run_worker(live):
    """Run a Worker on a thread against `live`; stopped (and joined) at the end."""
    started = []

    def run(worker, **options):
        worker.client = worker.client or lazyboss.Client(live.url, user="py-worker:")
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(status=worker.run(**options)), daemon=True)
        thread.start()
        started.append((worker, thread))
        return outcome

    yield run
    for worker, thread in started:
        wait_until(lambda w=worker: w._engine is not None, what="the worker to start")
        worker.stop()
        thread.join(20)
        assert not thread.is_alive(), "the worker did not stop"


def finished(client, job_id, timeout=20):
    return wait_until(
        lambda: (job := client.get(job_id))["status"] in lazyboss.FINISHED_STATUSES and job, timeout=timeout
    )


# -- the client


def test_the_client_submits_reads_lists_and_raises_the_servers_refusals(live):
    client = lazyboss.Client(live.url)
    job = client.submit("mail", {"to": "a"}, priority=5, delay=60, max_attempts=2, timeout=9, key="k1")
    assert (job["status"], job["priority"], job["max_attempts"], job["timeout"]) == ("pending", 5, 2, 9.0)
    assert client.submit("mail", {"to": "b"}, key="k1")["id"] == job["id"]  # one job per key
    batch = client.submit_many([{"type": "mail", "parameters": {"n": n}} for n in range(250)])
    assert len(batch) == 250 and client.get(batch[0]["id"])["parameters"] == {"n": 0}
    listed = list(client.jobs(type="mail", page_size=100))  # three pages
    assert [j["id"] for j in listed] == [j["id"] for j in reversed(batch)] + [job["id"]]
    with pytest.raises(lazyboss.NotFound) as missing:
        client.get("424242")
    assert (missing.value.status, missing.value.code, missing.value.detail) == (404, "not_found", "no job 424242")
    with pytest.raises(lazyboss.Conflict) as conflict:
        client.retry(job["id"])
    assert conflict.value.status == 409 and "pending" in conflict.value.detail
    with pytest.raises(lazyboss.Invalid):
        client.submit("bad type!")
    assert isinstance(conflict.value, lazyboss.LazybossError)
    with pytest.raises(lazyboss.Unreachable):
        lazyboss.Client(f"http://127.0.0.1:{free_port()}").get("1")


def test_wait_returns_as_soon_as_the_job_is_done_by_following_its_stream(live):
    client = lazyboss.Client(live.url)
    job = client.submit("t")
    with pytest.raises(TimeoutError):
        client.wait(job["id"], timeout=0.3)
    waited = {}
    thread = threading.Thread(target=lambda: waited.update(job=client.wait(job["id"]), at=time.monotonic()))
    thread.start()
    wait_until(lambda: client.stats()["open_streams"] == 1, what="the stream")
    worker = lazyboss.Client(live.url)
    claimed = worker.request("POST", "/jobs/attempt")[1]
    reported_at = time.monotonic()
    worker.request("PUT", f"/jobs/{job['id']}/attempts/{claimed['attempt']}/result", {"ok": True})
    thread.join(10)
    assert waited["job"]["status"] == "done" and waited["job"]["result"] == {"ok": True}
    assert waited["at"] - reported_at < 0.5
    assert client.wait(job["id"])["status"] == "done"  # an ended job: at once


def test_events_resume_without_gaps_across_a_server_restart(tmp_path):
    db = tmp_path / "events.sqlite"
    server = ServerProcess(db)
    port, seen = server.port, []
    client = lazyboss.Client(server.url)
    events = client.events()

    def read():
        for event in events:
            seen.append(event)
            if len(seen) == 6:
                return

    submitter = lazyboss.Client(server.url)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: submitter.stats()["open_streams"] == 1, what="the stream")
    for n in range(3):
        submitter.submit("t", {"n": n})
    wait_until(lambda: len(seen) == 3, what="the first events")
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(10)
    server = ServerProcess(db, port=port)
    try:
        for n in range(3, 6):
            lazyboss.Client(server.url).submit("t", {"n": n})
        reader.join(20)
        assert [event["job"]["parameters"]["n"] for event in seen] == list(range(6))
        ids = [int(event["id"]) for event in seen]
        assert ids == list(range(ids[0], ids[0] + 6))
    finally:
        server.stop()


# -- the worker


def test_four_slots_process_200_jobs(live, run_worker):
    worker = lazyboss.Worker(concurrency=4, grace=1)
    running, most = set(), []
    lock = threading.Lock()

    @worker.task("square")
    def square(params, job):
        with lock:
            running.add(job.id)
            most.append(len(running))
        time.sleep(0.002)
        with lock:
            running.discard(job.id)
        return params["n"] ** 2

    client = lazyboss.Client(live.url)
    jobs = client.submit_many([{"type": "square", "parameters": {"n": n}} for n in range(200)])
    run_worker(worker)
    wait_until(lambda: client.stats()["jobs"]["done"] == 200, timeout=40, what="200 jobs done")
    for job in jobs[::20]:
        done = client.get(job["id"])
        assert done["result"] == done["parameters"]["n"] ** 2 and done["attempts"] == 1
    assert 1 < max(most) <= 4


def test_an_exception_is_the_error_and_the_server_retries(live, run_worker):
    client = lazyboss.Client(live.url)
    client.put_type("flaky", backoff={"base": 0.01})
    worker = lazyboss.Worker(grace=1)

    @worker.task("flaky")
    def flaky(params, job):
        if job.attempt == "1":
            raise ValueError("not this time")
        return "fine"

    job = client.submit("flaky", max_attempts=2)
    run_worker(worker)
    done = finished(client, job["id"])
    assert done["status"] == "done" and done["result"] == "fine" and done["attempts"] == 2
    error = client.attempts(job["id"])[0]["error"]
    assert (error["error"], error["message"]) == ("ValueError", "not this time")
    assert 'raise ValueError("not this time")' in error["traceback"]


def test_cancel_reaches_the_function_within_a_heartbeat_and_nothing_is_reported(live, run_worker):
    worker, noticed = lazyboss.Worker(grace=1), {}

    @worker.task("long")
    def long(params, job):
        job.log("started\n")
        while not job.cancelled:  # reports nothing: only the heartbeat can bring the news
            time.sleep(0.01)
        noticed["at"] = time.monotonic()
        try:
            job.progress(50)
        except lazyboss.Cancelled:
            noticed["raised"] = True
            raise
        return "never"

    client = lazyboss.Client(live.url)
    job = client.submit("long", timeout=3)  # the heartbeat comes every second
    run_worker(worker)
    wait_until(lambda: client.get(job["id"])["status"] == "processing", what="the claim")
    wait_until(lambda: client.log(job["id"], "1") == "started\n", what="the function to start")
    cancelled_at = time.monotonic()
    client.cancel(job["id"])
    wait_until(lambda: "raised" in noticed, timeout=5, what="Cancelled inside the function")
    assert noticed["at"] - cancelled_at < 1.5
    time.sleep(0.3)
    (attempt,) = client.attempts(job["id"])
    assert attempt["status"] == "cancelled" and attempt["result"] is None and attempt["error"] is None


def test_a_function_that_never_reports_keeps_its_lease(live, run_worker):
    worker = lazyboss.Worker(grace=1)

    @worker.task("quiet")
    def quiet(params, job):
        time.sleep(2.5)
        return "kept"

    client = lazyboss.Client(live.url)
    job = client.submit("quiet", timeout=1)  # the reaper would expire it after a second of silence
    run_worker(worker)
    done = finished(client, job["id"])
    assert (done["status"], done["result"], done["attempts"]) == ("done", "kept", 1)


def test_progress_log_and_events_use_the_shell_workers_protocol(live, run_worker):
    worker = lazyboss.Worker(grace=1)

    @worker.task("report")
    def report(params, job):
        job.log("downloading 10%\r20%\r")
        job.log("done\r\n")
        job.progress(40)
        job.event("stage", {"name": "upload"})
        with pytest.raises(ValueError):
            job.progress(101)
        return {"ok": True}

    client = lazyboss.Client(live.url)
    job = client.submit("report")
    run_worker(worker)
    done = finished(client, job["id"])
    assert done["progress"] == 40.0 and client.log(job["id"], "1") == "downloading 10%\r20%\rdone\r\n"
    reported = []
    for event in client.events("0", jobs=[job["id"]]):  # /events goes on for ever: up to the job's end
        reported += [(item["event"], item["data"]) for item in (event.get("detail") or {}).get("events", [])]
        if event["event"] == "done":
            break
    assert ("stage", '{"name":"upload"}') in reported and ("percent", "40.0") in reported


def test_sigterm_lets_a_running_function_finish(server, tmp_path):
    (tmp_path / "slowjobs.py").write_text(
        "import time\nimport lazyboss\n\nworker = lazyboss.Worker()\n\n\n"
        "@worker.task('slow')\ndef slow(params, job):\n    time.sleep(1.5)\n    return 'finished'\n"
    )
    worker = WorkerProcess(server.url, "--python", "slowjobs:worker", command=None, cwd=tmp_path)
    client = lazyboss.Client(server.url)
    job = client.submit("slow")
    wait_until(lambda: client.get(job["id"])["status"] == "processing", what="the claim")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0
    done = client.get(job["id"])
    assert (done["status"], done["result"]) == ("done", "finished")
    worker.ended.wait(5)
    assert worker.logged("finished job") and worker.logged("worker stopped")


def test_work_python_refuses_what_is_not_a_worker(tmp_path):
    (tmp_path / "notaworker.py").write_text("worker = 42\n")
    run = subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), "work", "--python", "notaworker:worker"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "not a lazyboss.Worker" in run.stderr


def test_what_is_not_a_result_fails_the_job_and_the_slot_goes_on(start_live, run_worker):
    live = start_live(max_body=64 * 1024)  # waitress refuses more than 1 MiB + 64 KiB before reading it
    client = lazyboss.Client(live.url)
    worker = lazyboss.Worker(grace=1)  # one slot: each job must free it for the next

    @worker.task("odd")
    def odd(params, job):
        kind = params["kind"]
        if kind in ("SystemExit", "KeyboardInterrupt"):
            raise {"SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}[kind]()
        return {"nan": float("nan"), "huge": "x" * 5_000_000, "fine": "fine"}[kind]

    kinds = ["SystemExit", "KeyboardInterrupt", "nan", "huge", "fine"]
    jobs = [client.submit("odd", {"kind": kind}, max_attempts=1) for kind in kinds]
    run_worker(worker)
    outcomes = [finished(client, job["id"]) for job in jobs]
    assert [job["status"] for job in outcomes] == ["failed"] * 4 + ["done"]
    assert [job["error"]["error"] for job in outcomes[:4]] == [
        "SystemExit",
        "KeyboardInterrupt",
        "TypeError",
        "too_large",
    ]
    assert "not JSON" in outcomes[2]["error"]["message"] and "5000002 bytes" in outcomes[3]["error"]["message"]
