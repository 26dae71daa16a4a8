"""`lazyboss copy --from A --to B` (issue 17): an SQLite database moved to PostgreSQL and back loses nothing
(jobs, attempts, logs, events, types, schedules, tokens, workers), and ids go on after the copied ones."""

import json

import lazyboss
from support import run_cli


def fill(store):
    """A database with a bit of everything: jobs in each state, attempts, logs, events, a type, a schedule,
    tokens and a worker."""
    store.create_token("admin1", "admin")
    store.create_token("w1", "worker")
    store.put_type("resize", lazyboss._parse_type_settings({"timeout": 60, "max_attempts": 2, "labels": {"gpu": "y"}}))
    store.put_schedule("nightly", "report", {"all": True}, lazyboss.parse_every("1 day"))
    store.submit_jobs([lazyboss.JobSpec(type="resize", parameters={"n": n}) for n in range(4)], "key-1", batch=True)
    store.submit_jobs([lazyboss.JobSpec(type="mail", claims={"host": ["a", "b"]}, hold=True)])
    done, failed, running = store.claim_jobs("w1", ["resize"], 3)
    store.record_progress(done.job, done.attempt, "w1", [lazyboss.ProgressItem(1, "log_chunk", "half way\n")])
    store.complete_attempt(done.job, done.attempt, "w1", {"ok": True})
    store.fail_attempt(failed.job, failed.attempt, "w1", {"why": "disk"})
    store.cancel_job("4")
    store.saw_worker("w1")
    store.save_worker_contacts()
    return running


def everything(store):
    """What the database holds, as a user reads it through the store (JSON parsed: the engines space it apart)."""
    jobs = [json.loads(view) for page, _ in store.list_jobs([], [], 100, None) for view in page]
    return {
        "jobs": jobs,
        "attempts": {job["id"]: store.list_attempts(job["id"]) for job in jobs},
        "log": store.attempt_log("1", "1"),
        "events": [
            (event.id, event.job_id, event.kind, json.loads(event.data)) for event in store.events_after(0, [], [])
        ],
        "types": store.list_types(),
        "versions": store.type_versions("resize"),
        "schedules": store.list_schedules(),
        "tokens": store.list_tokens(),
        "workers": [worker["name"] for worker in store.list_workers()],
        "counts": store.count_jobs(),
    }


def test_a_database_copied_to_postgresql_and_back_is_the_same(tmp_path, postgres_store_url, clock):
    source = tmp_path / "jobs.sqlite"
    with_store = lazyboss.Store(str(source), clock=clock)
    running = fill(with_store)
    before = everything(with_store)
    last_event = with_store.last_event_id()
    with_store.close()

    copied = run_cli("copy", "--from", str(source), "--to", postgres_store_url)
    assert copied.returncode == 0, copied.stderr
    assert "5 jobs" in copied.stderr and f"{last_event} events" in copied.stderr

    on_postgres = lazyboss.Store(postgres_store_url, clock=clock)
    try:
        assert everything(on_postgres) == before
        # The copy goes on where the original stopped: the running attempt reports, new ids follow the old.
        assert on_postgres.complete_attempt(running.job, running.attempt, "w1", 7)["status"] == "done"
        (new,) = on_postgres.submit_jobs([lazyboss.JobSpec(type="mail")])
        assert json.loads(new)["id"] == "6"
        assert on_postgres.last_event_id() == last_event + 2
        after = everything(on_postgres)
    finally:
        on_postgres.close()

    back = tmp_path / "back.sqlite"
    copied = run_cli("copy", "--from", postgres_store_url, "--to", str(back))
    assert copied.returncode == 0, copied.stderr
    returned = lazyboss.Store(str(back), clock=clock)
    try:
        assert everything(returned) == after
        (newer,) = returned.submit_jobs([lazyboss.JobSpec(type="mail")])
        assert json.loads(newer)["id"] == "7"
    finally:
        returned.close()


def test_a_copy_into_a_database_that_holds_anything_is_refused_and_changes_nothing(tmp_path, postgres_store_url):
    source, target = tmp_path / "a.sqlite", tmp_path / "b.sqlite"
    for path in (source, target):
        store = lazyboss.Store(str(path))
        store.submit_jobs([lazyboss.JobSpec(type="t")])
        store.close()
    refused = run_cli("copy", "--from", str(source), "--to", str(target))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "not empty" in refused.stderr
    store = lazyboss.Store(str(target))
    assert store.count_jobs() == {"t": {"pending": 1}}
    store.close()
    missing = run_cli("copy", "--from", str(tmp_path / "nowhere.sqlite"), "--to", postgres_store_url)
    assert missing.returncode == 2 and "no database file" in missing.stderr
    assert not (tmp_path / "nowhere.sqlite").exists()
