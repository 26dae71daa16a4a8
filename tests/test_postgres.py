"""PostgreSQL as the database (issue 17): `--db postgresql://…` and `DATABASE_URL=postgresql://…` at start
(refused in one line without psycopg), a password never shown, and /health on a lost connection."""

import base64
import os
import subprocess
import sys

import pytest

import lazyboss
from support import ROOT, ServerProcess, wait_until


def environment_without_database():
    return {key: value for key, value in os.environ.items() if key not in ("LAZYBOSS_DB", "DATABASE_URL")}


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
@pytest.mark.parametrize("given", ["--db", "LAZYBOSS_DB", "DATABASE_URL"])
def test_without_psycopg_a_postgresql_database_is_refused_at_start_in_one_line(tmp_path, scheme, given):
    url = f"{scheme}://lazy:hunter2@127.0.0.1/jobs"
    flags = ["--db", url] if given == "--db" else []
    # lazyboss as installed without its postgres extra: psycopg cannot be imported.
    hide_psycopg = (
        "import runpy, sys; sys.modules['psycopg'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    refused = subprocess.run(
        [sys.executable, "-c", hide_psycopg, str(ROOT / "lazyboss.py"), *flags, "token", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**environment_without_database(), **({} if flags else {given: url})},
        timeout=30,
    )
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "pip install 'lazyboss[postgres]'" in refused.stderr and "hunter2" not in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_another_database_server_is_refused_naming_its_scheme_only(tmp_path):
    refused = subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), "--db", "mysql://lazy:hunter2@127.0.0.1/jobs", "token", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=environment_without_database(),
        timeout=30,
    )
    assert refused.returncode == 2 and "mysql: database" in refused.stderr and "hunter2" not in refused.stderr


@pytest.mark.parametrize("given", ["--db", "DATABASE_URL"])
def test_a_server_on_postgresql_serves_and_never_shows_the_password(postgres_store_url, tmp_path, given):
    # The test cluster trusts every local user: the password is sent to no one, but it is in the URL.
    url = postgres_store_url.replace("lazyboss@", "lazyboss:hunter2@")
    if given == "--db":
        server = ServerProcess(url, env=environment_without_database())
    else:  # ServerProcess always passes --db: DATABASE_URL is read when --db is not given at all
        server = ServerProcess(url, env={**environment_without_database(), "DATABASE_URL": url})
    try:
        client = server.client(user="w1")
        job = client.request("POST", "/jobs", {"type": "resize", "parameters": {"w": 10}}).json
        claimed = client.request("POST", "/jobs/attempt?type=resize").json
        assert claimed["id"] == job["id"] and claimed["parameters"] == {"w": 10}
        done = client.request("PUT", f"/jobs/{job['id']}/attempts/{claimed['attempt']}/result", {"ok": True})
        assert done.status == 201
        assert client.request("GET", f"/jobs/{job['id']}").json["result"] == {"ok": True}
        assert client.request("GET", "/health").json["database"] == "ok"
        stats = client.request("GET", "/stats")
        assert stats.status == 200 and stats.json["disk_free_bytes"] is None, stats.json
        metrics = client.request("GET", "/metrics").body.decode()
        assert 'lazyboss_jobs{type="resize",status="done"} 1' in metrics, metrics
        assert client.request("GET", "/", headers={"Accept": "text/html"}).status == 200  # the status page
    finally:
        server.stop()
    log = "".join(server.log)
    assert "serving postgresql://lazyboss:***@127.0.0.1:" in log, log
    assert "hunter2" not in log
    assert list(tmp_path.iterdir()) == []  # no SQLite file was made on the side


def test_health_turns_unhealthy_while_the_database_is_lost_and_recovers(postgres_store_url, start_live):
    import psycopg

    live = start_live()
    client = live.client()
    assert client.request("GET", "/health").status == 200
    database = postgres_store_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_store_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        # Every connection dropped, and none taken for now: as a PostgreSQL restarting, or a network down.
        admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (database,),
        )
        lost = wait_until(lambda: (answer := client.request("GET", "/health")).status == 503 and answer, what="503")
        assert lost.json["database"] == "database_unavailable", lost.json
        assert client.request("POST", "/jobs", {"type": "a"}).status == 503  # never acknowledged
        admin.execute(f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
    wait_until(lambda: client.request("GET", "/health").status == 200, timeout=30, what="healthy again")
    job = client.request("POST", "/jobs", {"type": "a"})
    assert job.status == 202
    assert client.request("GET", f"/jobs/{job.json['id']}").json["status"] == "pending"


@pytest.fixture
def database(postgres_store_url):
    """This module's live servers run on PostgreSQL."""
    return postgres_store_url


def test_the_store_names_its_database_without_the_password():
    engine = lazyboss._engine_for("postgresql://lazy:hunter2@db.example/jobs")
    assert str(engine) == "postgresql://lazy:***@db.example/jobs"
    engine = lazyboss._engine_for("postgres://db.example/jobs?user=lazy&password=hunter2&sslmode=require")
    assert str(engine) == "postgres://db.example/jobs?user=lazy&password=***&sslmode=require"
    assert str(lazyboss._engine_for("/srv/jobs.sqlite")) == "/srv/jobs.sqlite"


def test_a_nul_in_a_progress_event_is_kept_as_a_replacement_character(app):
    # PostgreSQL's text cannot hold NUL (SQLite's keeps it): a command's binary output must not fail its report.
    worker = {"Authorization": "Basic " + base64.b64encode(b"w1:").decode()}
    app.post_json("/jobs", {"type": "a"})
    job = app.post("/jobs/attempt", headers=worker).json
    progress = b"id: 1\nevent: log_chunk\ndata: a\x00b\n\n"
    path = f"/jobs/{job['id']}/attempts/{job['attempt']}"
    answer = app.put(f"{path}/progress", progress, headers={**worker, "Content-Type": "text/event-stream"})
    assert answer.status_int == 202
    assert app.get(f"{path}/log").text == "a\ufffdb"
