"""Server settings are checked at start: a bad flag or LAZYBOSS_* variable is one line on stderr and exit 2."""

import pytest

from support import EventStream, ServerProcess, run_cli

BAD_SETTINGS = [
    ("--threads", "0"),
    ("--threads", "1"),  # one stream would hold the only thread: /health would hang
    ("--threads", "4"),  # every thread reserved: no stream or long poll could ever run
    ("--threads", "many"),
    ("--port", "99999"),
    ("--port", "-1"),
    ("--port", "٨٠"),  # Arabic-Indic digits
    ("--max-wait", "nan"),
    ("--max-wait", "inf"),
    ("--max-body", "0"),
    ("--heartbeat", "0"),
    ("--reap-interval", "-1"),
    ("--retain", "forever"),
    ("--retain", "99999999999999999999d"),
    ("--sync", "sometimes"),
    ("--log-level", "loud"),
    ("--umask", "888"),
]


def assert_refused_in_one_line(finished, flag):
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert flag in lines[0] and "Traceback" not in finished.stderr


@pytest.mark.parametrize("flag, value", BAD_SETTINGS)
def test_a_bad_flag_is_refused_at_start(tmp_path, flag, value):
    assert_refused_in_one_line(run_cli("--db", str(tmp_path / "x.sqlite"), flag, value), flag)
    assert not (tmp_path / "x.sqlite").exists()


@pytest.mark.parametrize(
    "variable, value",
    [
        ("LAZYBOSS_PORT", "eighty"),
        ("LAZYBOSS_THREADS", "1"),
        ("LAZYBOSS_MAX_WAIT", "x"),
        ("LAZYBOSS_SYNC", "maybe"),
        ("LAZYBOSS_MAX_BODY", "1.5"),
    ],
)
def test_a_bad_variable_is_refused_at_start_and_named(tmp_path, variable, value):
    finished = run_cli("--db", str(tmp_path / "x.sqlite"), env={variable: value})
    assert_refused_in_one_line(finished, variable)


def test_a_flag_wins_over_a_bad_variable(tmp_path):
    finished = run_cli("--db", str(tmp_path / "x.sqlite"), "--port", "99999", env={"LAZYBOSS_PORT": "80"})
    assert_refused_in_one_line(finished, "--port")


def test_five_threads_keep_health_answering_while_the_one_stream_thread_is_held(tmp_path):
    server = ServerProcess(tmp_path / "jobs.sqlite", "--threads", "5")
    try:
        stream = EventStream(server.url, "/events")
        try:
            assert stream.status == 200
            assert server.client().request("GET", "/events", headers={"Accept": "text/event-stream"}).status == 503
            for _ in range(10):
                assert server.client(timeout=5).request("GET", "/health").status == 200
        finally:
            stream.close()
    finally:
        server.stop()


@pytest.mark.parametrize("umask, mode", [(None, 0o600), ("027", 0o640)])
def test_the_database_its_wal_and_shm_are_created_for_their_owner_only(tmp_path, umask, mode):
    db = tmp_path / "jobs.sqlite"
    server = ServerProcess(db, *(["--umask", umask] if umask else []))
    try:
        assert server.client().request("POST", "/jobs", {"type": "a"}).status == 202
        for path in (db, tmp_path / "jobs.sqlite-wal", tmp_path / "jobs.sqlite-shm"):
            assert path.stat().st_mode & 0o777 == mode, path
    finally:
        server.stop()


def test_a_host_that_is_no_address_is_refused_in_one_line(tmp_path):
    db = str(tmp_path / "x.sqlite")
    assert run_cli("--db", db, "token", "create", "--name", "me", "--role", "admin").returncode == 0
    assert_refused_in_one_line(run_cli("--db", db, "--host", "127.0.0.999"), "--host")


def test_a_name_that_only_looks_like_loopback_is_not_loopback(tmp_path):
    finished = run_cli("--db", str(tmp_path / "x.sqlite"), "--host", "127.attacker.example")
    assert finished.returncode == 2 and "no token exists" in finished.stderr
