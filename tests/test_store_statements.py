"""The store's statements for submits and claims: batches go in as multi-row INSERTs in pieces, the views
come back from the INSERT and the claim's UPDATE, and migration 14 drops an index no query read (on both
engines)."""

import json
import sqlite3

import pytest

import lazyboss


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 1000, 1234])
def test_a_batch_of_any_size_comes_back_whole_in_order(store, size):
    specs = [
        lazyboss.parse_job_spec({"type": f"t{n % 3}", "parameters": {"n": n}, "priority": n % 5}) for n in range(size)
    ]
    views = [json.loads(view) for view in store.submit_jobs(specs, batch=True)]
    assert [view["parameters"] for view in views] == [{"n": n} for n in range(size)]
    assert [view["type"] for view in views] == [f"t{n % 3}" for n in range(size)]
    assert [view["priority"] for view in views] == [n % 5 for n in range(size)]
    ids = [int(view["id"]) for view in views]
    assert ids == sorted(ids) and len(set(ids)) == size
    # As each job is read back, and one `submitted` event each, in the jobs' order.
    assert [store.get_job(view["id"]) for view in views] == views
    events = store.events_after(0, [], [], limit=size + 1)
    assert [(event.job_id, event.kind) for event in events] == [(job_id, "submitted") for job_id in ids]
    assert [json.loads(event.data)["job"] for event in events] == views
    counts = store.count_jobs()
    assert {name: counts[name]["pending"] for name in counts} == {
        f"t{kind}": len(range(kind, size, 3)) for kind in range(min(size, 3))
    }


def test_a_claimed_job_comes_as_read_back(store):
    (submitted,) = store.submit_jobs([lazyboss.parse_job_spec({"type": "render", "parameters": {"x": [1, 2]}})])
    (claim,) = store.claim_jobs("w1", ["render"])
    view = json.loads(claim.view)
    read = store.get_job(claim.job)
    assert view == {**read, "startedAt": read["updated_at"]}
    assert view["parameters"] == {"x": [1, 2]} and view["status"] == "processing" and view["attempt"] == "1"


def version_13_file(path):
    """An SQLite file as release 13's migrations left it, with pending jobs of two types and one done."""
    with sqlite3.connect(path) as db:
        for migration in lazyboss._MIGRATIONS[:13]:
            if callable(migration):
                migration(db)
            else:
                db.executescript(migration)
        db.execute("PRAGMA user_version = 13")
        rows = [(kind, priority, 1_000.0 + n) for n, (kind, priority) in enumerate([("a", 0), ("b", 5), ("a", 9)])]
        for kind, priority, run_at in rows:
            db.execute(
                """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                       backoff_base, backoff_max, created_at, updated_at)
                   VALUES (?, 'pending', '{}', ?, ?, 3, 60, 1, 60, ?, ?)""",
                (kind, priority, run_at, run_at, run_at),
            )
    return path


def test_migration_14_drops_the_unread_index_and_the_queue_stays_as_it_was(db_path, clock):
    store = lazyboss.Store(version_13_file(db_path), clock=clock)
    try:
        indexes = {row[0] for row in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "jobs_type_queue" not in indexes
        assert {"jobs_type_open_queue", "jobs_open_queue", "jobs_reserved"} <= indexes
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(lazyboss._MIGRATIONS) >= 14
        assert store.count_jobs() == {"a": {"pending": 2}, "b": {"pending": 1}}
        assert [claim.job for claim in store.claim_jobs("w", ["a"], limit=5)] == ["3", "1"]
        assert [claim.job for claim in store.claim_jobs("w")] == ["2"]
    finally:
        store.close()


def test_migration_14_twin_on_postgresql(postgres_url):
    engine = lazyboss._PostgresEngine(postgres_url)
    db = engine.connect()
    try:  # a database as the release before made it: the schema, version 1
        engine.begin(db)
        engine.apply(db, engine.migrations[0])
        engine.set_schema_version(db, 1)
        db.execute("COMMIT")
    finally:
        db.close()
    store = lazyboss.Store(postgres_url)
    try:
        indexes = {row[0] for row in store.db.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")}
        assert "jobs_type_queue" not in indexes and {"jobs_type_open_queue", "jobs_type_lapsed"} <= indexes
        assert store.engine.schema_version(store.db) == len(engine.migrations)
        store.submit_jobs([lazyboss.parse_job_spec({"type": "a", "parameters": {"n": n}}) for n in range(3)])
        assert [claim.job for claim in store.claim_jobs("w", ["a"], limit=2)] == ["1", "2"]
    finally:
        store.close()
