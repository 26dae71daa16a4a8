"""The PostgreSQL engine's own pieces on a real cluster (issue 17): what replicas rely on, each held to
its promise on a throwaway cluster (skipped without one); the store on PostgreSQL is tested by every
module not in SQLITE_ONLY (tests/conftest.py), test_postgres.py and test_replicas.py.
"""

import random
import threading
import time

import pytest

import lazyboss
from support import wait_until

pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")


@pytest.fixture
def engine(postgres_url):
    return lazyboss._PostgresEngine(postgres_url)


def test_the_schema_version_lives_in_its_own_table(engine):
    db = engine.connect()
    assert engine.schema_version(db) == 0
    engine.begin(db)  # its lock serialises every write, migrations too
    engine.set_schema_version(db, 3)
    db.execute("COMMIT")
    assert engine.schema_version(engine.connect()) == 3


def test_rows_read_by_position_and_by_name_with_question_mark_placeholders(engine):
    db = engine.connect()
    row = db.execute("SELECT ? AS answer, '100%' AS share", (42,)).fetchone()
    assert (row[0], row["answer"], row["share"], row.keys()) == (42, 42, "100%", ["answer", "share"])
    assert db.execute("SELECT '100%' AS share").fetchone()["share"] == "100%"  # no parameters: no placeholders


def test_a_bad_url_is_refused_without_repeating_its_password(postgres_cluster):
    url = postgres_cluster.url("no_such_database").replace("lazyboss@", "lazyboss:hunter2@")
    with pytest.raises(lazyboss.StorageError) as refused:
        lazyboss._PostgresEngine(url).connect()
    assert "hunter2" not in refused.value.detail and refused.value.code == "database_unavailable"


def test_concurrent_writers_and_a_resuming_follower_see_every_event_once_in_commit_order(engine):
    setup = engine.connect()
    setup.execute("CREATE TABLE events (seq BIGSERIAL PRIMARY KEY, id BIGINT UNIQUE, writer INT, n INT)")
    setup.execute("CREATE INDEX events_unnumbered ON events (seq) WHERE id IS NULL")
    setup.execute("CREATE TABLE event_counter (last BIGINT NOT NULL)")
    setup.execute("INSERT INTO event_counter VALUES (0)")
    writers, rounds = 8, 40
    done = threading.Event()
    failures = []

    def write(writer):
        db, pick = engine.connect(), random.Random(writer)
        try:
            for n in range(rounds):
                db.execute("BEGIN")
                for _ in range(pick.randint(1, 3)):
                    db.execute("INSERT INTO events (writer, n) VALUES (?, ?)", (writer, n))
                time.sleep(pick.random() / 1000)  # transactions overlap and end out of the order they began
                engine.commit(db)  # numbers them
        except Exception as error:  # pragma: no cover - reported below
            failures.append(error)

    seen, resumed = [], []

    def follow():
        # A follower that reconnects now and then, resuming after the last id it saw, as Last-Event-ID does.
        last = 0
        while not done.is_set() or last < setup.execute("SELECT last FROM event_counter").fetchone()[0]:
            db = engine.connect()
            resumed.append(last)
            for _ in range(5):
                rows = db.execute("SELECT id, writer, n FROM events WHERE id > ? ORDER BY id", (last,)).fetchall()
                seen.extend(tuple(row) for row in rows)
                last = rows[-1][0] if rows else last
            db.close()

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(writers)]
    follower = threading.Thread(target=follow)
    follower.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    done.set()
    follower.join(30)
    assert not failures
    stored = [tuple(row) for row in setup.execute("SELECT id, writer, n FROM events ORDER BY id").fetchall()]
    assert [event[0] for event in stored] == list(range(1, len(stored) + 1))  # gap-free, every event numbered
    assert seen == stored  # every event exactly once, in id order, though the follower resumed many times
    print(f"{len(stored)} events by {writers} writers; the follower resumed {len(resumed)} times")


@pytest.fixture
def queue_signal(engine):
    """The queue's signal of a listening engine, once its listener listens (it fires once when it starts)."""
    signals = {channel: lazyboss._Signal() for channel in lazyboss._EVENT_CHANNELS}
    listener = engine.listen(signals)
    queue = signals["lazyboss_queue"]
    wait_until(lambda: queue.generation > 0, timeout=10, what="the listener")
    yield queue
    engine.close()
    listener.join(5)


def notify_queue(engine, end):
    """NOTIFY the queue's channel in a transaction that ends with `end`; the moment it was sent."""
    writer = engine.connect()
    writer.execute("BEGIN")
    writer.execute("SELECT pg_notify('lazyboss_queue', '')")  # as the engine's commit sends it
    sent = time.monotonic()
    writer.execute(end)
    writer.close()
    return sent


def test_a_notify_wakes_a_listener_of_another_connection_within_milliseconds(engine, queue_signal):
    latencies = []
    for _ in range(20):
        seen = queue_signal.generation
        sent = notify_queue(engine, "COMMIT")
        assert queue_signal.wait(seen, 5) != seen
        latencies.append(time.monotonic() - sent)
    latencies.sort()
    print(f"wake-up across connections: median {latencies[10] * 1000:.1f} ms, worst {latencies[-1] * 1000:.1f} ms")
    assert latencies[10] < 0.1


def test_a_notify_of_a_rolled_back_transaction_wakes_nobody(engine, queue_signal):
    seen = queue_signal.generation
    notify_queue(engine, "ROLLBACK")
    assert queue_signal.wait(seen, 0.5) == seen


def test_claims_with_skip_locked_hand_each_job_out_exactly_once(engine):
    setup = engine.connect()
    setup.execute("CREATE TABLE jobs (id BIGSERIAL PRIMARY KEY, status TEXT NOT NULL, worker INT)")
    setup.execute("INSERT INTO jobs (status) SELECT 'pending' FROM generate_series(1, 2000)")
    claimed = {}

    def claim(worker):
        db = engine.connect()
        while True:
            rows = db.execute(
                """UPDATE jobs SET status = 'processing', worker = ?
                   WHERE id IN (SELECT id FROM jobs WHERE status = 'pending' ORDER BY id
                                LIMIT ? FOR UPDATE SKIP LOCKED)
                   RETURNING id""",
                (worker, random.randint(1, 5)),
            ).fetchall()
            if not rows:
                return
            claimed.setdefault(worker, []).extend(row[0] for row in rows)

    threads = [threading.Thread(target=claim, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = sorted(job for jobs in claimed.values() for job in jobs)
    assert every == list(range(1, 2001))  # none twice, none left
    assert len(claimed) > 1


def test_the_schema_applies_and_its_triggers_keep_counts_and_claim_keys(engine):
    db = engine.connect()
    db.execute(lazyboss._POSTGRES_SCHEMA)
    insert = """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout, backoff_base,
                                  backoff_max, created_at, updated_at, claims, claim_window)
                VALUES ('t', 'pending', '{}', 0, 100, 3, 300, 1, 600, 100, 100, ?, ?) RETURNING id"""
    plain = db.execute(insert, (None, None)).fetchone()[0]
    claimed = db.execute(insert, ('{"zone": ["a", "b"], "gpu": "yes"}', 5)).fetchone()[0]
    counts = "SELECT status, number FROM job_counts WHERE number > 0 ORDER BY status"
    assert db.execute(counts).fetchall() == [("pending", 2)]
    claim_keys = "SELECT key, value FROM job_claims WHERE job_id = ? ORDER BY key, value"
    assert db.execute(claim_keys, (claimed,)).fetchall() == [("gpu", "yes"), ("zone", "a"), ("zone", "b")]
    assert db.execute("SELECT reserved_until FROM jobs WHERE id = ?", (claimed,)).fetchone()[0] == 105
    db.execute("UPDATE jobs SET status = 'processing' WHERE id IN (?, ?)", (plain, claimed))
    assert db.execute(counts).fetchall() == [("processing", 2)]
    assert db.execute(claim_keys, (claimed,)).fetchall() == []
    assert db.execute("SELECT reserved_until FROM jobs WHERE id = ?", (claimed,)).fetchone()[0] is None
    db.execute("DELETE FROM jobs WHERE id = ?", (plain,))
    assert db.execute(counts).fetchall() == [("processing", 1)]
