"""Group commit on SQLite's file: a commit that fails (a full disk) fails each write of its group, and no write
acknowledged to concurrent writers is lost to kill -9. What a group shares, and that one failing write fails
alone, is held on both engines in test_postgres_group_commit.py."""

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
