"""The file --db names: another program's, a newer release's, damaged or not SQLite, not ours to write."""

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile

import pytest

import lazyboss
from support import ROOT, ServerProcess, assert_one_line_error, run_cli, wait_until


def fingerprint(path):
    """The file's bytes, and which of its -wal and -shm exist: what 'touched nothing' compares."""
    leftovers = [suffix for suffix in ("-wal", "-shm") if os.path.exists(f"{path}{suffix}")]
    return hashlib.sha256(path.read_bytes()).hexdigest(), leftovers


def refused_untouched(path, *mentions):
    """Start a server and run `token list` on `path`: each refuses in one line, exit 2, leaving it as it was."""
    before = fingerprint(path)
    for command in (["--port", "0"], ["token", "list"]):
        assert_one_line_error(run_cli("--db", str(path), *command, timeout=20), str(path), *mentions, status=2)
        assert fingerprint(path) == before


def another_programs_file(path, version=0, application_id=0):
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
        db.execute("INSERT INTO moz_places (url) VALUES ('https://example.org')")
        db.execute(f"PRAGMA user_version = {version}")
        db.execute(f"PRAGMA application_id = {application_id}")
    return path


@pytest.mark.parametrize("version, application_id", [(0, 0), (7, 0), (0, 0x5042)], ids=["plain", "versioned", "marked"])
def test_another_programs_sqlite_file_is_refused_and_left_alone(tmp_path, version, application_id):
    path = another_programs_file(tmp_path / "places.sqlite", version, application_id)
    refused_untouched(path, "another program's SQLite database")
    with sqlite3.connect(path) as db:
        assert [row[0] for row in db.execute("SELECT name FROM sqlite_master")] == ["moz_places"]


def test_a_file_of_a_newer_release_is_refused_naming_both_versions(tmp_path):
    path = tmp_path / "jobs.sqlite"
    lazyboss.Store(str(path)).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(lazyboss._MIGRATIONS) + 5}")
    refused_untouched(path, f"version {len(lazyboss._MIGRATIONS) + 5}", f"(version {len(lazyboss._MIGRATIONS)})")


def test_a_damaged_file_or_one_that_is_not_sqlite_is_refused_and_leaves_no_wal_behind(tmp_path):
    path = tmp_path / "jobs.sqlite"
    store = lazyboss.Store(str(path))
    with store.transaction() as db:
        db.executemany("INSERT INTO tokens (name, role, hash, created_at) VALUES (?, 'admin', ?, 0)",
                       [(f"t{n}", f"{n:064}") for n in range(200)])  # fmt: skip
    store.close()
    good = path.read_bytes()
    for start, garbage in ((100, 4000), (4096 * 3, 4096 * 3)):  # the schema's page, and tables' pages
        damaged = bytearray(good)
        damaged[start : start + garbage] = bytes(range(256)) * (garbage // 256) + bytes(garbage % 256)
        path.write_bytes(bytes(damaged))
        refused_untouched(path, "damaged")
    path.write_bytes(b"not a database, just notes\n" * 500)
    refused_untouched(path, "not an SQLite database")


def test_a_file_of_an_earlier_release_is_taken_and_marked_as_lazybosss(tmp_path):
    path = tmp_path / "jobs.sqlite"
    lazyboss.Store(str(path)).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA application_id = 0")  # as every release before the mark left it
    assert run_cli("--db", str(path), "token", "create", "--name", "me").returncode == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == lazyboss._APPLICATION_ID
        assert db.execute("SELECT name FROM tokens").fetchall() == [("me",)]
    empty = tmp_path / "empty.sqlite"
    empty.touch()  # an empty file is a new database
    assert run_cli("--db", str(empty), "token", "list").returncode == 0


@pytest.fixture
def shared_folder():
    """A folder an unprivileged user may write in (pytest's own are its owner's only)."""
    folder = tempfile.mkdtemp(prefix="lazyboss-test-")
    os.chmod(folder, 0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_nobody(*args):
    """`lazyboss ARGS…` run as the user nobody (skipped where this process cannot switch users)."""
    if os.geteuid() != 0:
        pytest.skip("switching to an unprivileged user needs root (CI and the dev container run as root)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    command = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    return subprocess.run(
        [*command, sys.executable, str(ROOT / "lazyboss.py"), *args], capture_output=True, text=True, timeout=20
    )


def test_a_database_file_its_user_may_not_write_is_refused_naming_it_and_its_mode(shared_folder):
    path = os.path.join(shared_folder, "jobs.sqlite")
    lazyboss.Store(path).close()
    os.chown(path, 65534, 65534)  # nobody's file, but read-only, as `chmod 444` leaves it
    os.chmod(path, 0o444)
    for command in (["--port", "0"], ["token", "list"]):
        assert_one_line_error(as_nobody("--db", path, *command), path, "mode -r--r--r--", "may not be", status=2)
        assert sorted(os.listdir(shared_folder)) == ["jobs.sqlite"]  # no WAL, no shared memory left behind
    os.chmod(path, 0o644)
    os.chown(path, 0, 0)  # root's file, which nobody may read but not write
    assert_one_line_error(as_nobody("--db", path, "token", "list"), path, "owner uid 0", status=2)
    os.chown(path, 65534, 65534)
    assert as_nobody("--db", path, "token", "list").returncode == 0  # once it is the user's, it is used


def jobs_of(path):
    with sqlite3.connect(path) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        return integrity, sorted(row[0] for row in db.execute("SELECT type FROM jobs"))


@pytest.mark.parametrize("copied", ["a backup of it", "another database"])
def test_a_copy_put_onto_the_live_file_is_noticed_and_kept_from_the_old_wal(tmp_path, copied):
    db = tmp_path / "jobs.sqlite"
    backup = tmp_path / "backup.sqlite"
    server = ServerProcess(db if copied == "a backup of it" else backup)
    try:
        for _ in range(3):
            assert server.client().request("POST", "/jobs", {"type": "old"}).status == 202
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
    finally:
        server.stop()
    if copied == "a backup of it":
        shutil.copyfile(db, backup)
    server = ServerProcess(db, "--reap-interval", "0.2")
    try:
        client = server.client()
        for _ in range(100):  # in the WAL, and (by the reaper's checkpoints) in the file
            assert client.request("POST", "/jobs", {"type": "new", "parameters": {"pad": "x" * 2000}}).status == 202
        shutil.copyfile(backup, db)  # as `cp backup.sqlite jobs.sqlite` does: the same inode, written over
        refused = client.request("POST", "/jobs", {"type": "after"})
        assert refused.status == 503 and refused.json["error"] == "database_overwritten", refused.json
        health = client.request("GET", "/health")
        assert health.status == 503 and health.json["database"] == "database_overwritten"
        assert client.request("POST", "/jobs", {"type": "after"}).status == 503
        listing = client.request("GET", "/jobs?limit=5")  # from the old WAL over the copy: when it fails, it says why
        assert listing.status == 200 or listing.json["error"] == "database_overwritten", listing.json
        wait_until(lambda: any("WAL" in line and "saved in" in line for line in server.log), what="the WAL set aside")
        assert sum("database_overwritten" in line for line in server.log) == 1, server.log
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(10) == 0
    finally:
        server.stop()
    assert jobs_of(db) == ("ok", ["old"] * 3)  # the copy put in place, untouched by the old WAL
    assert [path.name for path in tmp_path.glob("jobs.sqlite.orphaned-*-wal")]
    restarted = ServerProcess(db)
    try:
        assert restarted.client().request("GET", "/health").status == 200
        assert restarted.client().request("POST", "/jobs", {"type": "after"}).status == 202
    finally:
        restarted.stop()
    assert jobs_of(db) == ("ok", ["after"] + ["old"] * 3)
