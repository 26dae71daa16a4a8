"""PostgreSQL as an operator meets it: a server restarted under the replicas, a replica frozen inside a write,
a URL or a database that is wrong (said in one line: why, never the password), another program's database,
a user without the rights lazyboss needs, a multi-host URL, `lazyboss copy` from a database that is not
lazyboss's."""

import json
import logging
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress

import pytest

import lazyboss
from support import ROOT, HeldWrite, wait_until

pytestmark = pytest.mark.usefixtures("postgres_cluster")


@pytest.fixture
def database(postgres_store_url):
    """This module's live servers run on PostgreSQL."""
    return postgres_store_url


def admin(url):
    import psycopg

    return psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True)


def run_lazyboss(*arguments, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), *arguments], capture_output=True, text=True, cwd=cwd, timeout=30
    )


def backends(url, where="true"):
    name = url.rsplit("/", 1)[1]
    with admin(url) as db:
        return db.execute(
            f"SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() AND {where}",
            (name,),
        ).fetchone()[0]


def test_after_the_server_dropped_every_connection_no_request_is_refused_for_it(postgres_store_url, start_live):
    # As PostgreSQL restarted: every thread's connection is dead, and the replica learns it from its listener,
    # not by failing one request on each (they answered 503 while /health said 200).
    live = start_live()
    client = live.client()
    with ThreadPoolExecutor(8) as pool:  # connections on several of the server's threads
        assert set(pool.map(lambda _: live.client().request("GET", "/jobs").status, range(32))) == {200}
    assert backends(postgres_store_url) >= 4
    with admin(postgres_store_url) as db:
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (postgres_store_url.rsplit("/", 1)[1],),
        )
    # A thread (the reaper's, say) that met its dead connection first may have the replica say 503 for a
    # moment; what must not happen is a refusal while /health says 200, as a load balancer would send it.
    wait_until(
        lambda: (
            backends(postgres_store_url, "starts_with(query, 'LISTEN')")
            and client.request("GET", "/health").status == 200
        ),
        what="the listener back and the replica healthy",
    )
    answers = [client.request("POST", "/jobs", {"type": "a"}).status for _ in range(40)]
    assert answers == [202] * 40
    assert client.request("GET", "/health").status == 200


@pytest.fixture
def frozen_write(postgres_store_url):
    """A store's write left open, as by a replica frozen (SIGSTOP, a paused VM, a host cut off) inside it:
    it holds the write lock until `release` (which raises what its commit met)."""
    held = []

    def freeze():
        store = lazyboss.Store(postgres_store_url)
        held.append(HeldWrite(store, lambda db: db.execute("UPDATE event_counter SET last = last")))
        return held[-1]

    yield freeze
    for write in held:
        with suppress(lazyboss.StorageError):
            write.release()
        write.store.close()


def submit(store):
    """A job submitted on the store: its id."""
    return json.loads(store.submit_jobs([lazyboss.JobSpec(type="a")])[0])["id"]


def test_a_replica_frozen_inside_a_write_holds_the_others_up_for_seconds_not_forever(
    postgres_store_url, frozen_write, monkeypatch
):
    monkeypatch.setitem(lazyboss._PostgresEngine.SESSION_SETTINGS, "idle_in_transaction_session_timeout", "1s")
    frozen = frozen_write()
    other = lazyboss.Store(postgres_store_url)
    try:
        started = time.monotonic()
        job = submit(other)  # it waits for the lock until the server ends the frozen write
        assert time.monotonic() - started < 10
        assert other.get_job(job)["status"] == "pending"
    finally:
        other.close()
    with pytest.raises(lazyboss.StorageError) as thawed:
        frozen.release()
    assert thawed.value.code == "database_unavailable"  # thawed, it is refused: never acknowledged


def test_a_write_waits_for_a_frozen_replicas_lock_at_most_the_lock_timeout(
    postgres_store_url, frozen_write, monkeypatch
):
    monkeypatch.setitem(lazyboss._PostgresEngine.SESSION_SETTINGS, "idle_in_transaction_session_timeout", "0")
    monkeypatch.setitem(lazyboss._PostgresEngine.SESSION_SETTINGS, "lock_timeout", "1s")
    other = lazyboss.Store(postgres_store_url)  # opened first: opening writes (its migrations, none here)
    frozen_write()
    try:
        started = time.monotonic()
        with pytest.raises(lazyboss.StorageError) as refused:
            submit(other)
        assert time.monotonic() - started < 10
        assert refused.value.code == "database_busy" and "nothing was written" in refused.value.detail
        assert other.trouble() is None  # another's lock says nothing about the database: /health stays 200
    finally:
        other.close()


def test_a_connection_that_fails_says_why_and_never_the_password(postgres_url, tmp_path):
    missing = postgres_url.replace("lazyboss@", "lazyboss:hunter2@").rsplit("/", 1)[0] + "/no_such_database"
    refused = run_lazyboss("--db", missing, "token", "list", cwd=tmp_path)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert 'database "no_such_database" does not exist' in refused.stderr, refused.stderr
    assert "hunter2" not in refused.stderr and "lazyboss:***@" in refused.stderr


@pytest.mark.parametrize(
    "url, shown",
    [
        (
            "postgresql://db.example/jobs?user=me&pass%77ord=hunter2",
            "postgresql://db.example/jobs?user=me&password=***",
        ),
        ("postgresql://db.example/jobs?%70assword=hunter2", "postgresql://db.example/jobs?password=***"),
    ],
)
def test_a_password_in_the_query_is_never_shown_however_spelt(url, shown):
    assert str(lazyboss._engine_for(url)) == shown


def test_a_multi_host_url_is_taken_as_libpq_takes_it(postgres_store_url, tmp_path):
    # libpq's failover form (an HA setup's URL): the first host refuses, the second serves.
    host_and_port = postgres_store_url.split("@", 1)[1].split("/", 1)[0]
    url = postgres_store_url.replace(host_and_port, f"127.0.0.1:1,{host_and_port}")
    listed = run_lazyboss("--db", url, "token", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr


def test_a_database_holding_another_programs_tables_is_refused_in_one_line(postgres_url, tmp_path):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE TABLE jobs (id serial PRIMARY KEY, title text)")
        db.execute("INSERT INTO jobs (title) VALUES ('theirs')")
    refused = run_lazyboss("--db", postgres_url, "token", "list", cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "another program's tables (jobs)" in refused.stderr
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert db.execute("SELECT title FROM jobs").fetchall() == [("theirs",)]
        assert db.execute("SELECT to_regclass('lazyboss_schema')").fetchone()[0] is None


@contextmanager
def role_granted(url, *grants):
    """A new role (not a superuser, as the test cluster's own) given `grants` (`GRANT … TO` it) on the
    database of `url`: its name and URL."""
    import psycopg

    role = f"role_{uuid.uuid4().hex[:12]}"
    with admin(url) as db:
        db.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(url, autocommit=True) as db:
            for grant in grants:
                db.execute(f"GRANT {grant} TO {role}")
        yield role, url.replace("lazyboss@", f"{role}@")
    finally:
        with psycopg.connect(url, autocommit=True) as db:
            db.execute(f"DROP OWNED BY {role}")  # its privileges
        with admin(url) as db:
            db.execute(f"DROP ROLE {role}")


@pytest.fixture
def reader(postgres_store_url):
    """A role that may read lazyboss's tables and write none: its URL."""
    with role_granted(postgres_store_url, "SELECT ON ALL TABLES IN SCHEMA public") as (_, url):
        yield url


def test_a_user_without_the_rights_lazyboss_needs_is_refused_in_one_line(reader, tmp_path):
    refused = run_lazyboss("--db", reader, "token", "list", cwd=tmp_path)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "the PostgreSQL user may not do what lazyboss needs: permission denied for table" in refused.stderr


@pytest.fixture
def writer(postgres_store_url):
    """A role that may read and write lazyboss's tables, and create none: its name and URL."""
    with role_granted(
        postgres_store_url,
        "SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public",
        "USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public",
    ) as role:
        yield role


def test_rights_taken_away_while_serving_are_503_and_health_says_so(postgres_store_url, writer):
    import psycopg

    role, url = writer
    store = lazyboss.Store(url)
    try:
        submit(store)
        with psycopg.connect(postgres_store_url, autocommit=True) as db:
            db.execute(f"REVOKE INSERT ON jobs FROM {role}")
            with pytest.raises(lazyboss.StorageError) as refused:  # answered 503, as any StorageError
                submit(store)
            assert refused.value.code == "permission_denied" and "permission denied for table jobs" in str(
                refused.value.detail
            )
            assert store.trouble().code == "permission_denied"  # /health: 503 saying so
            db.execute(f"GRANT INSERT ON jobs TO {role}")
        store.recover()  # the reaper's round: a write proved
        assert store.trouble() is None
        submit(store)
    finally:
        store.close()


def test_the_listener_says_once_that_it_lost_the_server_and_once_that_it_is_back(postgres_store_url, caplog):
    caplog.set_level(logging.WARNING, logger="lazyboss")
    name = postgres_store_url.rsplit("/", 1)[1]
    store = lazyboss.Store(postgres_store_url)
    try:
        wait_until(lambda: backends(postgres_store_url, "starts_with(query, 'LISTEN')"), what="the listener")
        with admin(postgres_store_url) as db:
            db.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
            try:
                db.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()",
                    (name,),
                )
                time.sleep(3.5)  # three attempts to listen again, at least
            finally:
                db.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        wait_until(
            lambda: backends(postgres_store_url, "starts_with(query, 'LISTEN')"), timeout=40, what="listening again"
        )
        wait_until(lambda: any("listening again" == r.getMessage()[-15:] for r in caplog.records), what="the line")
    finally:
        store.close()
    lines = [record.getMessage() for record in caplog.records if "PostgreSQL listener" in record.getMessage()]
    assert len(lines) == 2, lines
    assert "listening again every second until it can" in lines[0] and lines[1].endswith("listening again")


def test_a_replica_older_than_the_schema_a_newer_one_migrated_turns_unhealthy(postgres_store_url, start_live):
    # A rolling upgrade: the first new replica migrates; an old one still running must not look healthy.
    import psycopg

    client = start_live().client()
    assert client.request("GET", "/health").status == 200
    with psycopg.connect(postgres_store_url, autocommit=True) as db:
        db.execute("UPDATE lazyboss_schema SET version = version + 1")
        try:
            refused = client.request("POST", "/jobs", {"type": "a"})  # before /health was asked: the write looks
            assert refused.status == 503 and refused.json["error"] == "schema_too_new", refused.json
            assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0
            health = client.request("GET", "/health")
            assert health.status == 503 and health.json["database"] == "schema_too_new", health.json
            assert "run a newer lazyboss" in health.json["detail"]
            time.sleep(0.3)  # reaper rounds (every 0.05 s here): its recovery does not call it healed
            assert client.request("GET", "/health").status == 503
        finally:
            db.execute("UPDATE lazyboss_schema SET version = version - 1")


def test_copy_from_a_postgresql_database_without_lazyboss_refuses_and_makes_nothing_there(postgres_url, tmp_path):
    import psycopg

    refused = run_lazyboss("copy", "--from", postgres_url, "--to", str(tmp_path / "new.sqlite"), cwd=tmp_path)
    assert refused.returncode == 2 and "holds no lazyboss database" in refused.stderr, refused.stderr
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert db.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    assert not (tmp_path / "new.sqlite").exists()


@pytest.mark.parametrize("way", ["from", "to"])
def test_a_copy_waiting_on_the_other_database_is_not_ended_for_idling(postgres_store_url, tmp_path, monkeypatch, way):
    # The server ends a transaction idle for idle_in_transaction_session_timeout (a frozen replica's write):
    # a copy's transaction on one database is idle while the other takes a large log in.
    monkeypatch.setitem(lazyboss._PostgresEngine.SESSION_SETTINGS, "idle_in_transaction_session_timeout", "1s")
    sqlite = lazyboss.Store(str(tmp_path / "jobs.sqlite"))
    postgres = lazyboss.Store(postgres_store_url)
    source, target = (postgres, sqlite) if way == "from" else (sqlite, postgres)
    try:
        job = submit(source)
        encode = lazyboss._encode

        def slow_encode(value):  # each event's job, re-encoded between the copy's statements
            time.sleep(1.5)
            return encode(value)

        monkeypatch.setattr(lazyboss, "_encode", slow_encode)
        copied = source.copy_into(target)
        monkeypatch.setattr(lazyboss, "_encode", encode)
        assert copied["jobs"] == 1 and copied["events"] == 1
        assert target.get_job(job)["status"] == "pending"
    finally:
        sqlite.close()
        postgres.close()


def test_a_copy_out_of_postgresql_holds_a_batch_of_rows_in_memory_not_a_table(postgres_store_url, tmp_path):
    # 150 MB of logs (750 chunks of 200 kB): psycopg's own cursor read a whole table into memory first.
    import psycopg

    store = lazyboss.Store(postgres_store_url)
    try:
        submit(store)
        store.claim_jobs("w1", limit=1)
    finally:
        store.close()
    with psycopg.connect(postgres_store_url, autocommit=True) as db:
        db.execute(
            "INSERT INTO progress (job_id, attempt_id, id, event, data, at) "
            "SELECT 1, 1, n, 'log_chunk', repeat(md5(n::text), 200000 / 32), 0 FROM generate_series(1, 750) AS n"
        )
    measure = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)"
    )
    copy = [sys.executable, str(ROOT / "lazyboss.py"), "copy", "--from", postgres_store_url]
    done = subprocess.run(
        [sys.executable, "-c", measure, *copy, "--to", str(tmp_path / "copy.sqlite")],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
    )
    assert done.returncode == 0 and "750 progress" in done.stderr, done.stderr
    assert int(done.stdout) < 200, f"{done.stdout} MiB at most"  # 353 MiB before; 124 MiB now
