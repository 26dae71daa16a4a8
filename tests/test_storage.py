"""The store fails safe: a full or read-only disk, a deleted or replaced file, failed transactions, start-up errors."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading

import pytest
import webtest

import lazyboss
from support import ROOT, ServerProcess, assert_one_line_error, wait_until


def integrity_and_ids(path, job_type):
    with sqlite3.connect(path) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        ids = {str(row[0]) for row in db.execute("SELECT id FROM jobs WHERE type = ?", (job_type,))}
    return integrity, ids


def submit_until_refused(client, job_type="keep", limit=2000):
    """Submit jobs with 2 KB of parameters until one is refused; return the acknowledged ids and the refusal."""
    acknowledged = []
    for number in range(limit):
        response = client.request("POST", "/jobs", {"type": job_type, "parameters": {"n": number, "pad": "x" * 2000}})
        if response.status != 202:
            return acknowledged, response
        acknowledged.append(response.json["id"])
    raise AssertionError(f"{limit} jobs fitted on the small disk")


# -- a full disk


def test_a_full_disk_answers_507_serves_reads_and_goes_on_by_itself_once_space_is_freed(small_disk):
    disk = small_disk("4m")
    db = disk.folder / "jobs.sqlite"
    server = ServerProcess(db, "--reap-interval", "0.2")
    try:
        client = server.client()
        disk.fill(leave=256 * 1024)
        acknowledged, refused = submit_until_refused(client)
        assert acknowledged and refused.status == 507
        assert refused.json["error"] == "storage_full" and "full" in refused.json["detail"]
        batch = client.request("POST", "/jobs", [{"type": "batch", "parameters": {"pad": "x" * 2000}}] * 50)
        assert batch.status == 507  # all or nothing
        health = client.request("GET", "/health")
        assert health.status == 503 and health.json["database"] == "storage_full"
        assert client.request("GET", f"/jobs/{acknowledged[0]}").status == 200
        assert len(client.request("GET", "/jobs?type=keep&limit=1000").json["jobs"]) == len(acknowledged)
        wait_until(lambda: any("storage_full" in line for line in server.log), what="one log line")
        assert not any("Traceback" in line for line in server.log)

        disk.make_room()
        wait_until(lambda: client.request("GET", "/health").status == 200, what="health back by itself")
        later = client.request("POST", "/jobs", {"type": "keep", "parameters": {"after": True}})
        assert later.status == 202
        acknowledged.append(later.json["id"])
        assert sum("takes writes again" in line for line in server.log) == 1

        # Full again, and killed there: what was acknowledged is all there after a restart.
        disk.fill(leave=64 * 1024)
        more, refused = submit_until_refused(client)
        assert refused.status == 507
        acknowledged += more
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        server.stop()
    disk.make_room()
    integrity, kept = integrity_and_ids(db, "keep")
    assert integrity == "ok"
    assert kept == set(acknowledged)
    assert integrity_and_ids(db, "batch")[1] == set()


def test_killed_while_the_disk_is_full_it_restarts_unhealthy_serving_reads(small_disk):
    disk = small_disk("4m")
    db = disk.folder / "jobs.sqlite"
    server = ServerProcess(db)
    try:
        disk.fill(leave=128 * 1024)
        acknowledged, refused = submit_until_refused(server.client())
        assert refused.status == 507
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        server.stop()
    restarted = ServerProcess(db, "--reap-interval", "0.2")  # on the same full disk
    try:
        client = restarted.client()
        health = client.request("GET", "/health")  # as before the restart, from the first answer
        assert health.status == 503 and health.json["database"] == "storage_full", health.json
        listing = client.request("GET", "/jobs?type=keep&limit=1000").json["jobs"]
        assert {job["id"] for job in listing} == set(acknowledged)
        assert submit_until_refused(client)[1].status == 507
        disk.make_room()
        wait_until(lambda: client.request("GET", "/health").status == 200, what="health back by itself")
        assert client.request("POST", "/jobs", {"type": "keep"}).status == 202
    finally:
        restarted.stop()
    assert integrity_and_ids(db, "keep")[0] == "ok"


def test_a_checkpoint_that_finds_the_disk_full_turns_health_503_until_it_completes(small_disk, clock):
    disk = small_disk("16m")
    path = str(disk.folder / "jobs.sqlite")
    store = lazyboss.Store(path, clock=clock)
    try:
        app = webtest.TestApp(lazyboss.make_app(store))
        ids = [
            view["id"]
            for _ in range(30)
            for view in map(json.loads, store.submit_jobs([lazyboss.JobSpec("keep", {"pad": "x" * 2000})] * 10))
        ]
        assert store.file_sizes()["wal"] > 1 << 20  # the jobs are in the WAL, not yet in the file
        disk.fill(leave=64 * 1024)  # room for a few more WAL frames, not for the file to take them all
        with pytest.raises(lazyboss.StorageFull):
            store.checkpoint()
        health = app.get("/health", status=503).json
        assert health["database"] == "storage_full"
        assert app.get(f"/jobs/{ids[-1]}").json["status"] == "pending"

        reaper = lazyboss.Reaper(store)
        reaper.run_once()
        assert app.get("/health", status=503).json["database"] == "storage_full"
        assert reaper.healthy()  # a round that finds the disk full still is a round: no watchdog restart
        disk.make_room()
        reaper.run_once()
        assert app.get("/health").json["status"] == "ok"
        assert store.file_sizes()["wal"] < 64 * 1024  # folded in and truncated (then the proof's one page)
        app.post_json("/jobs", {"type": "keep"}, status=202)
    finally:
        store.close()
    integrity, kept = integrity_and_ids(path, "keep")
    assert integrity == "ok" and set(ids) <= kept and len(kept) == len(ids) + 1


def test_a_full_disk_does_not_stop_authenticated_reads(small_disk, clock):
    disk = small_disk("4m")
    store = lazyboss.Store(str(disk.folder / "jobs.sqlite"), clock=clock)
    try:
        secret = store.create_token("reader", "client")
        app = webtest.TestApp(lazyboss.make_app(store))
        disk.fill()
        clock.advance(3600)  # the token's last use is due to be written, which cannot be now
        headers = {"Authorization": f"Bearer {secret}"}
        assert app.get("/jobs", headers=headers).json == {"jobs": [], "next": None}
        refused = app.post_json("/jobs", {"type": "a", "parameters": {"pad": "x" * 9000}}, headers=headers, status=507)
        assert refused.json["error"] == "storage_full"
    finally:
        store.close()


# -- a read-only database


def test_a_read_only_file_system_refuses_to_start_in_one_line(small_disk):
    disk = small_disk("4m")
    lazyboss.Store(str(disk.folder / "jobs.sqlite")).close()
    disk.remount("ro")
    for command in ([], ["token", "list"]):
        finished = run_lazyboss("--db", str(disk.folder / "jobs.sqlite"), *command)
        assert_one_line_error(finished, str(disk.folder), "read-only")


def test_read_only_at_run_time_refuses_writes_with_503_and_health_503_but_serves_reads(app, store):
    job = app.post_json("/jobs", {"type": "a"}, status=202).json
    store.writer.execute("PRAGMA query_only = ON")  # SQLite now answers writes as on a read-only file
    refused = app.post_json("/jobs", {"type": "a"}, status=503).json
    assert refused["error"] == "read_only" and "read-only" in refused["detail"]
    assert app.post(f"/jobs/{job['id']}/cancel", status=503).json["error"] == "read_only"
    assert app.get(f"/jobs/{job['id']}").json["status"] == "pending"
    assert app.get("/health", status=503).json["database"] == "read_only"
    store.writer.execute("PRAGMA query_only = OFF")
    lazyboss.Reaper(store).run_once()
    assert app.get("/health").json["status"] == "ok"
    app.post_json("/jobs", {"type": "a"}, status=202)


# -- a damaged file, and the mapping of SQLite's errors


def test_a_damaged_file_answers_503_not_500_and_health_says_so(db_path, clock):
    store = lazyboss.Store(db_path, clock=clock)
    store.submit_jobs([lazyboss.JobSpec("a", {"pad": "x" * 3000})] * 30)
    store.close()
    with open(db_path, "r+b") as damaged:  # scribble over the second half, where the jobs are
        size = os.path.getsize(db_path)
        damaged.seek(size // 2)
        damaged.write(os.urandom(size - size // 2))
    store = lazyboss.Store(db_path, clock=clock)
    try:
        app = webtest.TestApp(lazyboss.make_app(store))
        answer = app.get("/jobs", expect_errors=True)
        assert answer.status_int == 503 and answer.json["error"] in ("database_corrupt", "not_a_database")
        assert app.get("/health", status=503).json["database"] in ("database_corrupt", "not_a_database")
        lazyboss.Reaper(store).run_once()
        assert app.get("/health", status=503).json["status"] == "unhealthy"  # until an operator acts
    finally:
        store.close()


@pytest.mark.parametrize(
    ("message", "status", "code"),
    [
        ("database or disk is full", 507, "storage_full"),
        ("attempt to write a readonly database", 503, "read_only"),
        ("disk I/O error", 503, "io_error"),
        ("database disk image is malformed", 503, "database_corrupt"),
        ("file is not a database", 503, "not_a_database"),
        ("database is locked", 503, "database_busy"),
    ],
)
def test_sqlite_errors_map_to_one_kind_each_also_without_a_code(message, status, code):
    failure = lazyboss._storage_error(sqlite3.OperationalError(message))  # as Python before 3.11 raises them
    assert isinstance(failure, lazyboss.StorageError)
    assert (failure.status, failure.code) == (status, code)


def test_errors_of_lazyboss_itself_are_not_blamed_on_the_disk():
    assert lazyboss._storage_error(sqlite3.IntegrityError("UNIQUE constraint failed: jobs.id")) is None
    assert lazyboss._storage_error(sqlite3.OperationalError("no such table: jobz")) is None


# -- the database file deleted or replaced while running


@pytest.mark.parametrize("mishap", ["deleted", "replaced", "wal deleted", "moved and put back"])
def test_a_database_deleted_or_replaced_while_running_turns_unhealthy_and_refuses_writes(tmp_path, mishap):
    db = tmp_path / "jobs.sqlite"
    backup = tmp_path / "backup.sqlite"
    restored = lazyboss.Store(str(backup))
    restored.submit_jobs([lazyboss.JobSpec("restored")])
    restored.close()
    server = ServerProcess(db, "--reap-interval", "0.2")
    try:
        client = server.client()
        kept = client.request("POST", "/jobs", {"type": "keep"}).json["id"]
        if mishap == "deleted":
            db.unlink()
        elif mishap == "replaced":
            os.replace(backup, db)  # a backup restored while the server runs
        elif mishap == "wal deleted":
            os.unlink(f"{db}-wal")
        else:
            os.rename(db, tmp_path / "aside.sqlite")
        health = client.request("GET", "/health")
        assert health.status == 503 and health.json["database"] == "database_gone"
        refused = client.request("POST", "/jobs", {"type": "lost"})
        assert refused.status == 503 and refused.json["error"] == "database_gone"
        if mishap == "moved and put back":
            os.rename(tmp_path / "aside.sqlite", db)
            wait_until(lambda: client.request("GET", "/health").status == 200, what="health back")
            assert client.request("POST", "/jobs", {"type": "keep"}).status == 202
        else:
            wait_until(lambda: any("saved in" in line for line in server.log), what="what it held saved aside")
        server.process.send_signal(signal.SIGKILL)  # the worst way to stop now
        server.process.wait(10)
    finally:
        server.stop()
    assert not any("Traceback" in line for line in server.log)
    if mishap == "moved and put back":
        integrity, kept_jobs = integrity_and_ids(db, "keep")
        assert integrity == "ok" and kept in kept_jobs and len(kept_jobs) == 2
        return
    (orphan,) = tmp_path.glob("jobs.sqlite.orphaned-*")
    integrity, saved = integrity_and_ids(orphan, "keep")
    assert integrity == "ok" and saved == {kept}  # an acknowledged job survives even a deleted database
    assert integrity_and_ids(orphan, "lost")[1] == set()
    if mishap == "replaced":  # what the operator put there is left as it was (no stale WAL replayed into it)
        assert integrity_and_ids(db, "restored") == ("ok", {"1"})
        assert integrity_and_ids(db, "keep")[1] | integrity_and_ids(db, "lost")[1] == set()
    if mishap == "wal deleted":  # the WAL SQLite still held open was folded into the file
        assert integrity_and_ids(db, "keep") == ("ok", {kept})


def test_a_new_connection_never_creates_a_fresh_file_where_the_database_was(store, db_path):
    store.submit_jobs([lazyboss.JobSpec("a")])
    os.unlink(db_path)
    failures = []

    def read_in_a_new_thread():
        try:
            store.get_job("1")
        except lazyboss.StorageError as error:
            failures.append(error.code)

    reader = threading.Thread(target=read_in_a_new_thread)
    reader.start()
    reader.join(10)
    assert failures == ["database_gone"]
    assert not os.path.exists(db_path)
    with pytest.raises(lazyboss.StorageError, match="deleted or replaced"):
        store.submit_jobs([lazyboss.JobSpec("b")])
    assert store.writer.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1  # rolled back, not acknowledged


# -- transactions that fail


def test_a_commit_that_fails_rolls_back_and_other_writers_do_not_wait(store, db_path):
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        with store.transaction() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")  # the violation shows at COMMIT, which then fails
            db.execute("INSERT INTO progress (job_id, attempt_id, id, event, data, at) VALUES (9, 1, 1, 'x', '', 0)")
    assert not store.writer.in_transaction
    other_process = sqlite3.connect(db_path, timeout=0)
    other_process.execute("BEGIN IMMEDIATE")  # "database is locked" if the failed transaction were still open
    other_process.execute("ROLLBACK")
    other_process.close()
    store.submit_jobs([lazyboss.JobSpec("after")])
    assert store.db.execute("SELECT COUNT(*) FROM progress").fetchone()[0] == 0


class Refusal(Exception):
    pass


def deny_rollback(conn):
    """Make ROLLBACK fail on this connection, as it may on a disk that has just gone."""

    def authorize(action, first, *rest):
        denied = action == sqlite3.SQLITE_TRANSACTION and first == "ROLLBACK"
        return sqlite3.SQLITE_DENY if denied else sqlite3.SQLITE_OK

    conn.set_authorizer(authorize)


def test_a_failing_rollback_does_not_hide_the_first_error_nor_keep_the_lock(store, db_path):
    deny_rollback(store.writer)
    with pytest.raises(Refusal):
        with store.transaction() as db:
            db.execute("INSERT INTO types (name, updated_at) VALUES ('half', 0)")
            raise Refusal("the first error")
    deny_rollback(store.writer)
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):  # the failed COMMIT's error, not ROLLBACK's
        with store.transaction() as db:
            db.execute("PRAGMA defer_foreign_keys = ON")
            db.execute("INSERT INTO progress (job_id, attempt_id, id, event, data, at) VALUES (9, 1, 1, 'x', '', 0)")
    other_process = sqlite3.connect(db_path, timeout=0)
    other_process.execute("BEGIN IMMEDIATE")
    other_process.execute("ROLLBACK")
    assert other_process.execute("SELECT COUNT(*) FROM types").fetchone()[0] == 0  # nothing half-written
    other_process.close()
    store.submit_jobs([lazyboss.JobSpec("after")])  # a fresh connection serves this thread


def test_a_transaction_inside_another_fails_loudly_instead_of_waiting_for_itself(store):
    with pytest.raises(RuntimeError, match="inside another"):
        with store.transaction() as db:
            db.execute("INSERT INTO types (name, updated_at) VALUES ('outer', 0)")
            with store.transaction():
                pass
    assert store.db.execute("SELECT COUNT(*) FROM types").fetchone()[0] == 0  # the outer one rolled back
    store.submit_jobs([lazyboss.JobSpec("after")])


# -- start-up errors: one line, a non-zero exit, never a traceback


def run_lazyboss(*args):
    return subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), *args], capture_output=True, text=True, timeout=20
    )


def test_a_port_in_use_is_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = run_lazyboss("--db", str(tmp_path / "jobs.sqlite"), "--port", str(port))
    assert_one_line_error(finished, f"127.0.0.1:{port}", "in use")


@pytest.mark.parametrize("command", [[], ["token", "create", "--name", "me"]])
def test_a_database_that_cannot_be_used_is_one_line_naming_why(tmp_path, command):
    missing = tmp_path / "missing" / "jobs.sqlite"
    assert_one_line_error(run_lazyboss("--db", str(missing), *command), str(missing.parent), "does not exist")
    assert_one_line_error(run_lazyboss("--db", str(tmp_path), *command), str(tmp_path), "is a directory")
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("these are my notes, not a database\n" * 200)
    assert_one_line_error(run_lazyboss("--db", str(not_sqlite), *command), str(not_sqlite), "not an SQLite", status=2)
    newer = tmp_path / "newer.sqlite"
    lazyboss.Store(str(newer)).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    assert_one_line_error(run_lazyboss("--db", str(newer), *command), "newer", status=2)
    assert not_sqlite.read_text().startswith("these are my notes")  # left alone


def test_a_full_disk_at_start_is_one_line(small_disk):
    disk = small_disk("1m")
    existing = disk.folder / "existing.sqlite"
    lazyboss.Store(str(existing)).close()  # closed cleanly: its shared memory must be made anew
    disk.fill()
    for db in (disk.folder / "new.sqlite", existing):
        assert_one_line_error(run_lazyboss("--db", str(db)), str(db), "full")


def test_an_unwritable_directory_is_one_line(small_disk):
    disk = small_disk("1m")
    disk.remount("ro")
    db = disk.folder / "jobs.sqlite"
    assert_one_line_error(run_lazyboss("--db", str(db)), str(disk.folder), "read-only")
    assert not db.exists()


# -- a database on a network share, and how much room is left


def test_the_file_system_type_is_read_from_the_mount_table(tmp_path):
    table = tmp_path / "mounts"
    table.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        "server:/export /srv/shared\\040jobs nfs4 rw 0 0\n"
        "//nas/share /srv/shared\\040jobs/smb cifs rw 0 0\n"
        "tmpfs /srv/shared\\040jobsx tmpfs rw 0 0\n"
    )
    assert lazyboss._file_system_type("/srv/shared jobs/jobs.sqlite", str(table)) == "nfs4"
    assert lazyboss._file_system_type("/srv/shared jobs/smb/a/jobs.sqlite", str(table)) == "cifs"
    assert lazyboss._file_system_type("/srv/shared jobsx/jobs.sqlite", str(table)) == "tmpfs"
    assert lazyboss._file_system_type("/var/lib/jobs.sqlite", str(table)) == "ext4"
    assert lazyboss._file_system_type("/x/jobs.sqlite", str(tmp_path / "no-such-table")) is None


def test_a_database_on_a_network_file_system_is_refused(small_disk, monkeypatch):
    disk = small_disk("1m")
    monkeypatch.setattr(lazyboss, "_NETWORK_FILE_SYSTEMS", {"tmpfs"})  # stands in for nfs, which needs a server
    with pytest.raises(lazyboss.StorageError, match=r"network file system \(tmpfs\).*local disk"):
        lazyboss.Store(str(disk.folder / "jobs.sqlite"))
    assert not (disk.folder / "jobs.sqlite").exists()


def test_stats_and_metrics_tell_the_free_space_left(small_disk, clock):
    disk = small_disk("4m")
    store = lazyboss.Store(str(disk.folder / "jobs.sqlite"), clock=clock)
    try:
        app = webtest.TestApp(lazyboss.make_app(store))
        free = app.get("/stats").json["disk_free_bytes"]
        assert abs(free - disk.free_bytes()) <= 64 * 1024 and free > 3 << 20
        disk.fill()
        assert app.get("/stats").json["disk_free_bytes"] == 0
        assert "\nlazyboss_disk_free_bytes 0\n" in app.get("/metrics").text
    finally:
        store.close()
