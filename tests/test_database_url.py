"""DATABASE_URL: sqlite:///PATH, sqlite:RELATIVE or a plain path; --db and LAZYBOSS_DB win; anything else refused."""

import os
import sqlite3
import subprocess
import sys

import pytest

import lazyboss
from support import ROOT, Client, free_port, run_cli, start_process, wait_until


def token_create(cwd, *args, env):
    """`lazyboss [ARGS] token create` in `cwd` with `env` (and without LAZYBOSS_DB unless given)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("LAZYBOSS_DB", "DATABASE_URL")}
    return subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), *args, "token", "create", "--name", "me", "--role", "admin"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**environment, **env},
        timeout=30,
    )


def tokens_in(path):
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT name FROM tokens")]


@pytest.mark.parametrize(
    "url, where",
    [
        ("sqlite:///{tmp}/by-url.sqlite", "by-url.sqlite"),
        ("sqlite:////{tmp}/four-slashes.sqlite", "four-slashes.sqlite"),
        ("sqlite:relative.sqlite", "relative.sqlite"),
        ("SQLite:///{tmp}/with%20space.sqlite", "with space.sqlite"),
        ("{tmp}/plain.sqlite", "plain.sqlite"),
        ("plain-relative.sqlite", "plain-relative.sqlite"),
        ("jobs:2026.sqlite", "jobs:2026.sqlite"),
    ],
)
def test_database_url_names_the_file(tmp_path, url, where):
    done = token_create(tmp_path, env={"DATABASE_URL": url.format(tmp=tmp_path)})
    assert done.returncode == 0, done.stderr
    assert tokens_in(tmp_path / where) == ["me"]
    assert not (tmp_path / "lazyboss.sqlite").exists()


def test_db_and_lazyboss_db_win_over_database_url(tmp_path):
    url = {"DATABASE_URL": f"sqlite:///{tmp_path}/url.sqlite"}
    assert token_create(tmp_path, "--db", "flag.sqlite", env=url).returncode == 0
    assert token_create(tmp_path, env={**url, "LAZYBOSS_DB": "variable.sqlite"}).returncode == 0
    assert tokens_in(tmp_path / "flag.sqlite") == tokens_in(tmp_path / "variable.sqlite") == ["me"]
    assert not (tmp_path / "url.sqlite").exists()
    # Even a URL lazyboss cannot use is no matter then.
    assert token_create(tmp_path, "--db", "other.sqlite", env={"DATABASE_URL": "mysql://x@h/db"}).returncode == 0


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root:hunter2@localhost/jobs",
        "sqlite://hunter2@host/jobs.sqlite",
        "sqlite:///jobs.sqlite?mode=ro&password=hunter2",
        "sqlite::memory:",
        "sqlite://",
        "sqlite:///",
    ],
)
def test_anything_else_is_refused_in_one_line_that_repeats_no_secret(tmp_path, url):
    refused = token_create(tmp_path, env={"DATABASE_URL": url})
    assert refused.returncode == 2
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "sqlite:///ABSOLUTE/PATH" in refused.stderr and "hunter2" not in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_serve_uses_database_url(tmp_path):
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if key != "LAZYBOSS_DB"}
    process = start_process(
        [sys.executable, str(ROOT / "lazyboss.py"), "--port", str(port)],
        env={**environment, "DATABASE_URL": f"sqlite:///{tmp_path}/served.sqlite"},
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = Client(f"http://127.0.0.1:{port}", timeout=2)

        def answers():
            try:
                return client.request("POST", "/jobs", {"type": "t"}).status == 202
            except OSError:
                return False

        wait_until(answers, timeout=15, what="the server")
    finally:
        process.terminate()
        _, log = process.communicate(timeout=10)
    assert process.returncode == 0, log
    with sqlite3.connect(tmp_path / "served.sqlite") as db:
        assert db.execute("SELECT type FROM jobs").fetchall() == [("t",)]
    assert f"serving {tmp_path}/served.sqlite" in log


def test_client_commands_do_not_read_database_url():
    unreachable = run_cli("jobs", "--server", "http://127.0.0.1:9", env={"DATABASE_URL": "mysql://x@y/z"})
    assert unreachable.returncode == 3 and "mysql" not in unreachable.stderr


def test_the_url_is_read_in_one_place():
    assert lazyboss._database_path("sqlite:///srv/jobs.sqlite") == "/srv/jobs.sqlite"
    assert lazyboss._database_path("sqlite:db/jobs.sqlite") == "db/jobs.sqlite"
    assert lazyboss._database_path("postgresql://u:p@h/d") == "postgresql://u:p@h/d"  # the server's URL as it is
    with pytest.raises(ValueError, match="names a mysql: database"):
        lazyboss._database_path("mysql://u:p@h/d")
