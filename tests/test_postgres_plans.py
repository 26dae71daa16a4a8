"""PostgreSQL's query plans for claims: a claim reads what it takes through the indexes meant for it, even on
a new database whose tables the planner has no statistics for yet (autovacuum analyzes them later)."""

import time

import pytest

import lazyboss

pytest.importorskip("psycopg")


def claim_plan(store, types):
    """The plan of the statement that picks the jobs a claim of `types` takes (EXPLAIN ANALYZE: as it ran)."""
    query, parameters = store.engine.claimable(types, {}, time.time(), 1, 1 << 20)
    plan = store.db.execute(f"EXPLAIN ANALYZE SELECT id FROM jobs WHERE id IN ({query})", parameters).fetchall()
    return "\n".join(row[0] for row in plan)


def test_a_database_of_the_first_schema_gets_the_lapsed_reservations_index(postgres_url):
    engine = lazyboss._PostgresEngine(postgres_url)
    db = engine.connect()
    engine.begin(db)
    engine.apply(db, engine.migrations[0])
    engine.set_schema_version(db, 1)  # as the release before this one left it
    db.execute("COMMIT")
    db.close()
    store = lazyboss.Store(postgres_url)
    try:
        assert store.engine.schema_version(store.db) == len(store.engine.migrations) >= 2
        indexes = {row[0] for row in store.db.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'")}
        assert "jobs_type_lapsed" in indexes
    finally:
        store.close()


def test_a_claim_on_a_new_database_reads_no_more_than_the_head_of_the_queue(postgres_url):
    store = lazyboss.Store(postgres_url)
    try:
        store.submit_jobs([lazyboss.JobSpec("t", parameters=n) for n in range(2000)])
        plan = claim_plan(store, ["t"])  # no ANALYZE yet: the planner guesses
        assert "jobs_type_lapsed" in plan and "jobs_type_queue" not in plan, plan
        assert "Rows Removed by Filter" not in plan, plan  # no job of the queue read only to be passed over
        (claim,) = store.claim_jobs("w", ["t"])
        assert claim.job == "1"
    finally:
        store.close()


def test_a_claim_naming_many_types_looks_them_up_together_and_takes_the_most_urgent(postgres_store_url):
    store = lazyboss.Store(postgres_store_url)
    try:
        named = [f"t{n}" for n in range(300)]
        store.put_type("t7", {"paused": 1})
        store.submit_jobs(
            [lazyboss.JobSpec("elsewhere", priority=9), lazyboss.JobSpec("t7", priority=8)]
            + [lazyboss.JobSpec(name, priority=n % 5) for n, name in enumerate(named)]
        )
        plan = claim_plan(store, named)
        assert plan.count("Limit") < 10, plan  # not a head for each of the 300 types
        claims = store.claim_jobs("w", named, 3)
        assert [claim.job for claim in claims] == ["7", "12", "17"]  # t4, t9, t14: priority 4, oldest first
    finally:
        store.close()
