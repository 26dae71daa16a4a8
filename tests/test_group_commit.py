"""Group commit: writes that arrive together share one commit, are answered only once it is on disk, and one
that fails fails alone (unless the commit itself fails: then each of them hears it)."""

import concurrent.futures
import http.client
import signal
import sqlite3
import threading

import pytest

import lazyboss
from support import HeldWrite, ServerProcess, wait_until


def committed_types(db_path):
    """The job types the file holds as committed (read by another connection, as another process would)."""
    with sqlite3.connect(db_path) as db:
        return {row[0] for row in db.execute("SELECT name FROM types")}


def test_writes_that_arrive_together_share_one_commit_and_a_failing_one_fails_alone(store, db_path):
    commits = []
    store.writer.set_trace_callback(lambda sql: sql.startswith("COMMIT") and commits.append(sql))
    held = HeldWrite(store, lambda db: db.execute("INSERT INTO types (name, updated_at) VALUES ('first', 0)"))

    def put(name):
        view = store.put_type(name, {"paused": True})  # reads its own write back inside the group
        return view, committed_types(db_path)  # as it returns: on disk already

    def failing():
        with store.transaction() as db:
            db.execute("INSERT INTO types (name, updated_at) VALUES ('half', 0)")
            raise lazyboss.Conflict("changed its mind after writing")

    def submit():
        (view,) = store.submit_jobs([lazyboss.JobSpec("after")])
        return view

    first, refused, second, job = held.queue(lambda: put("a"), failing, lambda: put("b"), submit)
    assert not first.done() and committed_types(db_path) == set()
    held.release()
    with pytest.raises(lazyboss.Conflict):
        refused.result(10)
    for future, name in ((first, "a"), (second, "b")):
        view, on_disk = future.result(10)
        assert view["paused"] is True and view["type"] == name
        assert {"first", "a", "b"} <= on_disk
    assert job.result(10)
    assert committed_types(db_path) == {"first", "a", "b"}  # and not the failed write's
    assert len(commits) == 1  # one commit, one fsync, for the five writes
    store.writer.set_trace_callback(None)
    assert store.counters[("jobs_submitted", "after")] == 1


def test_a_commit_that_finds_the_disk_full_fails_every_write_of_its_group(small_disk, clock):
    disk = small_disk("4m")
    store = lazyboss.Store(str(disk.folder / "jobs.sqlite"), clock=clock)
    try:
        disk.fill(leave=128 * 1024)
        pad = {"pad": "x" * 2000}
        with pytest.raises(lazyboss.StorageFull):
            for _ in range(1000):  # until the WAL has no room left
                store.submit_jobs([lazyboss.JobSpec("keep", parameters=pad)])
        kept = store.count_jobs()["keep"]["pending"]
        held = HeldWrite(store, lambda db: db.execute("INSERT INTO types (name, updated_at) VALUES ('held', 0)"))
        writes = held.queue(*[lambda: store.submit_jobs([lazyboss.JobSpec("lost", parameters=pad)])] * 3)
        with pytest.raises(lazyboss.StorageFull):
            held.release()
        for write in writes:
            with pytest.raises(lazyboss.StorageFull) as refused:
                write.result(10)
            assert refused.value.status == 507 and refused.value.code == "storage_full"
        assert store.count_jobs() == {"keep": {"pending": kept}}
        assert store.failure is not None and store.failure.code == "storage_full"
        disk.make_room()
        lazyboss.Reaper(store).run_once()
        assert store.failure is None
        store.submit_jobs([lazyboss.JobSpec("after")])  # the writer goes on
        assert "held" not in committed_types(store.path)
    finally:
        store.close()


def test_no_write_acknowledged_to_concurrent_writers_is_lost_to_kill_9(tmp_path):
    db = tmp_path / "durable.sqlite"
    server = ServerProcess(db, "--log-level", "warning")
    submitted, claimed, reported, killed = set(), set(), {}, threading.Event()

    def submit_singles():
        client = server.client()
        while True:
            answer = client.request("POST", "/jobs", {"type": "keep", "parameters": {"single": True}})
            assert answer.status == 202
            submitted.add(answer.json["id"])

    def submit_batches():
        client = server.client()
        while True:
            answer = client.request("POST", "/jobs", [{"type": "keep", "parameters": n} for n in range(25)])
            assert answer.status == 202
            submitted.update(job["id"] for job in answer.json)

    def work(name):
        client = server.client(user=name)
        while True:
            answer = client.request("POST", "/jobs/attempt?type=keep&max=10")
            if answer.status == 204:
                continue
            jobs = answer.json["jobs"]
            claimed.update((job["id"], job["attempt"]) for job in jobs)
            body = [{"job": job["id"], "attempt": job["attempt"], "result": {"by": name}} for job in jobs]
            for job, outcome in zip(jobs, client.request("POST", "/jobs/reports", body).json["reports"]):
                assert outcome["status"] == 201
                reported[job["id"]] = name

    def until_killed(call, *args):
        try:
            call(*args)
        except (OSError, http.client.HTTPException, ValueError):
            assert killed.is_set(), "a request failed before the server was killed"

    writers = [submit_singles] * 4 + [submit_batches] * 2
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        running = [pool.submit(until_killed, writer) for writer in writers]
        running += [pool.submit(until_killed, work, f"w{n}") for n in range(2)]
        try:
            wait_until(lambda: len(submitted) > 600 and len(reported) > 100, timeout=30, what="writes to pile up")
        finally:
            killed.set()
            server.process.send_signal(signal.SIGKILL)  # while every writer is in the middle of its next write
            server.process.wait(10)
        for future in running:
            future.result(10)
    server.stop()
    with sqlite3.connect(db) as kept:
        jobs = {
            str(job_id): (status, result)
            for job_id, status, result in kept.execute("SELECT id, status, result FROM jobs")
        }
        attempts = {(str(job_id), str(attempt)) for job_id, attempt in kept.execute("SELECT job_id, id FROM attempts")}
    assert submitted <= set(jobs)
    assert claimed <= attempts
    assert all(jobs[job_id] == ("done", f'{{"by":"{name}"}}') for job_id, name in reported.items())
