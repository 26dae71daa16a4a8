"""Races between a read and a write: each made deterministic with a hook or a held lock, not left to luck."""

import json
import sqlite3
import threading

import pytest
import webtest

import lazyboss
from support import (
    begins_a_write,
    interleave,
    open_long_poll,
    rows,
    start_blocked_on_the_write_lock,
    statements_of_this_thread,
    wait_until,
    write_lock_held,
)

LOCK_WAIT = 60.0  # seconds the (test) clock moves on while a call waits for the write lock


def submit(store, **fields):
    (view,) = store.submit_jobs([lazyboss.JobSpec(**{"type": "echo", **fields})])
    return json.loads(view)


def sse_events(text):
    """The data of each event in a text/event-stream body, with its id."""
    events = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "data" in lines:
            events.append((int(lines["id"]), json.loads(lines["data"])))
    return events


def column(store, sql, *args):
    return rows(store, sql, *args)[0][0]


# -- 1. a job's stream starts from one snapshot


def test_a_change_between_reading_a_job_and_its_event_id_still_reaches_the_stream(app, store):
    job = submit(store)
    claimed = store.claim_next_job("w1")
    finish = lambda: store.complete_attempt(job["id"], claimed["attempt"], "w1", {"ok": True})  # noqa: E731
    # Were the stream to open with "processing" under the id of the "done" event, it would wait
    # for a change that already happened; this stops it after 5 s so that the test can say so.
    stopper = threading.Timer(5, store.stop_waiting)
    stopper.start()
    try:
        with interleave(store, "FROM events", finish):
            response = app.get(f"/jobs/{job['id']}", headers={"Accept": "text/event-stream"})
    finally:
        stopper.cancel()
    events = sse_events(response.text)
    assert not store.stopping.is_set(), f"the stream did not end by itself: {events}"
    assert events[-1][1]["status"] == "done"
    done_event = column(store, "SELECT MAX(id) FROM events WHERE job_id = ?", int(job["id"]))
    assert events[-1][0] == done_event


def test_a_finished_job_resumed_after_its_last_event_gets_204(app, store):
    job = submit(store)
    store.cancel_job(job["id"])
    last = column(store, "SELECT MAX(id) FROM events")
    headers = {"Accept": "text/event-stream", "Last-Event-ID": str(last)}
    assert app.get(f"/jobs/{job['id']}", headers=headers).status_int == 204
    headers["Last-Event-ID"] = str(last - 1)
    assert sse_events(app.get(f"/jobs/{job['id']}", headers=headers).text)[-1][1]["status"] == "cancelled"


# -- 4. times are taken once the write lock is held


def after_waiting_for_the_lock(store, clock, call):
    """`call`'s result when it had to wait for the write lock while LOCK_WAIT seconds passed."""
    with write_lock_held(store):
        pending = start_blocked_on_the_write_lock(store, call)
        clock.advance(LOCK_WAIT)
    return pending.result(timeout=30)


def test_a_claim_that_waited_for_the_lock_starts_its_lease_then(store, clock):
    submit(store, timeout=0.3)
    claimed = after_waiting_for_the_lock(store, clock, lambda: store.claim_next_job("w1"))
    assert claimed["startedAt"] == lazyboss.rfc3339(clock.now)
    assert store.expire_stale_attempts() == 0  # the lease runs from the claim, not from before the wait
    clock.advance(0.5)
    assert store.expire_stale_attempts() == 1


def test_progress_that_waited_for_the_lock_renews_the_lease_from_then(store, clock):
    job = submit(store, timeout=0.3)
    claimed = store.claim_next_job("w1")
    items = [lazyboss.ProgressItem(1, "log_chunk", "x")]
    after_waiting_for_the_lock(store, clock, lambda: store.record_progress(job["id"], claimed["attempt"], "w1", items))
    assert store.expire_stale_attempts() == 0
    assert store.get_job(job["id"])["updated_at"] == lazyboss.rfc3339(clock.now)


def test_the_backoff_of_an_error_that_waited_for_the_lock_counts_from_then(store, clock):
    job = submit(store)
    claimed = store.claim_next_job("w1")
    fail = lambda: store.fail_attempt(job["id"], claimed["attempt"], "w1", {})  # noqa: E731
    failed = after_waiting_for_the_lock(store, clock, fail)
    assert failed["status"] == "pending" and failed["updated_at"] == lazyboss.rfc3339(clock.now)
    run_at = column(store, "SELECT run_at FROM jobs WHERE id = ?", int(job["id"]))
    assert clock.now + 1.5 <= run_at <= clock.now + 2.5  # 2 s ± 25 % after the error was taken


@pytest.mark.parametrize("when", [{}, {"delay": 5}])
def test_a_submit_that_waited_for_the_lock_is_created_then(store, clock, when):
    spec = lazyboss.JobSpec(type="echo", **when)
    (view,) = after_waiting_for_the_lock(store, clock, lambda: store.submit_jobs([spec]))
    job = json.loads(view)
    assert job["created_at"] == lazyboss.rfc3339(clock.now)
    assert job["run_at"] == lazyboss.rfc3339(clock.now + when.get("delay", 0))


def test_results_cancels_and_retries_that_waited_for_the_lock_are_stamped_then(store, clock):
    done, cancelled = submit(store), submit(store)
    claimed = store.claim_next_job("w1")
    finished = after_waiting_for_the_lock(
        store, clock, lambda: store.complete_attempt(done["id"], claimed["attempt"], "w1", 1)
    )
    assert finished["finished_at"] == lazyboss.rfc3339(clock.now)
    stopped = after_waiting_for_the_lock(store, clock, lambda: store.cancel_job(cancelled["id"]))
    assert stopped["finished_at"] == lazyboss.rfc3339(clock.now)
    retried = after_waiting_for_the_lock(store, clock, lambda: store.retry_job(cancelled["id"]))
    assert retried["run_at"] == lazyboss.rfc3339(clock.now)


def test_the_reaper_that_waited_for_the_lock_judges_leases_and_ticks_by_then(store, clock):
    submit(store, timeout=LOCK_WAIT / 2)
    store.claim_next_job("w1")
    assert after_waiting_for_the_lock(store, clock, store.expire_stale_attempts) == 1
    every = lazyboss.parse_every("1 hour")
    store.put_schedule("soon", "tick", {}, every)
    clock.now = every.next_after(clock.now) - LOCK_WAIT / 2  # the tick falls due while the reaper waits
    assert after_waiting_for_the_lock(store, clock, store.fire_due_schedules) == 1


def test_sessions_and_token_use_that_waited_for_the_lock_are_stamped_then(store, clock):
    secret = store.create_token("me", "admin")
    after_waiting_for_the_lock(store, clock, lambda: store.find_token(secret))
    assert store.list_tokens()[0]["last_used_at"] == lazyboss.rfc3339(clock.now)
    after_waiting_for_the_lock(store, clock, lambda: store.create_session("me", 3600))
    assert column(store, "SELECT created_at FROM sessions") == clock.now


# -- 6. an attempt read while retention deletes its job


def finish_and_age(store, clock):
    """A job done with one attempt, old enough for retention to delete it."""
    job = submit(store)
    claimed = store.claim_next_job("w1")
    store.record_progress(job["id"], claimed["attempt"], "w1", [lazyboss.ProgressItem(1, "log_chunk", "hello")])
    store.complete_attempt(job["id"], claimed["attempt"], "w1", {"ok": True})
    clock.advance(3600)
    return job


def delete_old(store):
    return lambda: store.delete_finished_jobs(retain=60)


@pytest.mark.parametrize("nth", [1, 2])
def test_an_attempt_deleted_while_it_is_read_is_a_404_never_a_500(app, store, clock, nth):
    job = finish_and_age(store, clock)
    with interleave(store, "FROM attempts", delete_old(store), nth=nth) as deleted:
        response = app.get(f"/jobs/{job['id']}/attempts/1", expect_errors=True)
    assert deleted["result"] == 1
    assert response.status_int in (200, 404), response.text
    if response.status_int == 200:
        assert response.json["result"] == {"ok": True}


@pytest.mark.parametrize(("path", "statement"), [("attempts", "FROM attempts"), ("attempts/1/log", "FROM progress")])
def test_a_listing_never_shows_a_job_deleted_meanwhile_as_empty(app, store, clock, path, statement):
    job = finish_and_age(store, clock)
    with interleave(store, statement, delete_old(store)) as deleted:
        response = app.get(f"/jobs/{job['id']}/{path}", expect_errors=True)
    assert deleted["result"] == 1
    if response.status_int == 200:  # read before the delete: then all of it
        assert len(response.json) == 1 if path == "attempts" else response.text == "hello"
    else:
        assert response.status_int == 404, response.text


def test_stats_count_and_age_the_queue_from_one_snapshot(app, store, clock):
    submit(store, type="a")
    clock.advance(5)
    with interleave(store, "MIN(run_at)", lambda: store.claim_next_job("w1")):
        stats = app.get("/stats").json
    assert stats["jobs"]["pending"] == 1 and stats["oldest_pending_age_seconds"] == {"a": 5}


# -- 5. a schedule is read, fired and moved in one transaction


def jobs_of(store, job_type):
    return column(store, "SELECT COUNT(*) FROM jobs WHERE type = ?", job_type)


@pytest.mark.parametrize("change", ["delete", "put"])
@pytest.mark.parametrize("fire", ["tick", "run now"])
def test_a_schedule_changed_as_it_fires_makes_no_job_after_the_change_answered(store, clock, database, change, fire):
    every = lazyboss.parse_every("1 hour")
    store.put_schedule("s", "old", {}, every)
    clock.now = every.next_after(clock.now)
    other = lazyboss.Store(database, clock=clock)  # another server on the same database

    def change_it():
        if change == "delete":
            other.delete_schedule("s")
        else:
            other.put_schedule("s", "new", {}, lazyboss.parse_every("1 day"))
        return jobs_of(other, "old")  # as the change answered

    try:
        with interleave(store, begins_a_write(store), change_it) as changed:
            try:
                store.fire_due_schedules() if fire == "tick" else store.run_schedule("s")
            except lazyboss.NotFound:
                assert change == "delete" and fire == "run now"
    finally:
        other.close()
    assert jobs_of(store, "old") == changed["result"]


def test_each_due_schedule_fires_once_per_call(store, clock):
    for name in ("a", "b"):
        store.put_schedule(name, name, {}, lazyboss.parse_every("1 minute"))
    clock.advance(60)
    assert store.fire_due_schedules() == 2
    assert store.fire_due_schedules() == 0
    ((views, _),) = store.list_jobs([], [], 10, None)
    assert [json.loads(view)["type"] for view in views] == ["b", "a"]


# -- 7. one idempotency key names one submission


def keyed(app, body, key, status=202):
    return app.post_json("/jobs", body, headers={"Idempotency-Key": key}, status=status)


def test_a_key_resent_with_the_same_submission_returns_its_jobs(app, store):
    batch = keyed(app, [{"type": "a"}, {"type": "b"}], "k").json
    assert keyed(app, [{"type": "a"}, {"type": "b"}], "k").json == batch
    one = keyed(app, {"type": "a"}, "one")
    again = keyed(app, {"type": "a", "priority": 5}, "one")  # the first submission wins
    assert again.json == one.json and again.headers["Location"] == one.headers["Location"]
    listed = keyed(app, [{"type": "a"}], "listed").json
    assert keyed(app, [{"type": "a"}], "listed").json == listed
    assert column(store, "SELECT COUNT(*) FROM jobs") == 4


@pytest.mark.parametrize(
    ("first", "then"),
    [
        ([{"type": "a"}, {"type": "a"}], [{"type": "a"}, {"type": "a"}, {"type": "a"}]),
        ([{"type": "a"}, {"type": "a"}], {"type": "a"}),
        ({"type": "a"}, [{"type": "a"}]),
        ({"type": "a"}, [{"type": "a"}, {"type": "a"}]),
    ],
)
def test_a_key_resent_with_another_submission_is_a_conflict_that_makes_nothing(app, store, first, then):
    keyed(app, first, "k")
    before = column(store, "SELECT COUNT(*) FROM jobs")
    refused = keyed(app, then, "k", status=409).json
    assert refused["error"] == "key_reused" and "'k'" in refused["detail"]
    assert column(store, "SELECT COUNT(*) FROM jobs") == before


def test_a_client_key_never_names_a_batch_member_or_a_schedule_tick(app, store, clock):
    batch = keyed(app, [{"type": "a"}, {"type": "a"}], "k").json
    member_key = keyed(app, {"type": "a"}, "k/1").json
    assert member_key["id"] not in [job["id"] for job in batch]
    every = lazyboss.parse_every("1 hour")
    store.put_schedule("nightly", "backup", {}, every)
    tick = every.next_after(clock.now)
    forged = keyed(app, {"type": "decoy"}, f"schedule:nightly:{tick:.3f}").json
    clock.now = tick
    assert store.fire_due_schedules() == 1
    made = app.get("/schedules/nightly").json["last_job"]
    assert made != forged["id"] and app.get(f"/jobs/{made}").json["type"] == "backup"


def test_a_key_is_forgotten_with_the_last_job_of_its_submission(app, store, clock):
    first = keyed(app, [{"type": "a"}, {"type": "a"}], "k").json
    for job in first:
        store.cancel_job(job["id"])
    clock.advance(3600)
    assert store.delete_finished_jobs(retain=60) == 2
    again = keyed(app, [{"type": "a"}, {"type": "a"}], "k").json
    assert {job["id"] for job in again}.isdisjoint(job["id"] for job in first)


def test_keys_of_an_older_file_are_split_into_submissions_and_ticks(db_path):
    with sqlite3.connect(db_path) as db:
        for migration in lazyboss._MIGRATIONS[:3]:
            db.executescript(migration)
        db.execute("PRAGMA user_version = 3")
        keys = ["k/0", "k/1", "x", "y/0", "schedule:nightly:1800000000.000", "x/0", "x/1", "k"]
        db.executemany(
            """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                   backoff_base, backoff_max, created_at, updated_at, idempotency_key)
               VALUES ('old', 'pending', '{}', 0, 0, 3, 300, 1, 600, 0, 0, ?)""",
            [(key,) for key in keys],
        )
    store = lazyboss.Store(db_path)
    try:
        app = webtest.TestApp(lazyboss.make_app(store))
        assert [job["id"] for job in keyed(app, [{"type": "a"}, {"type": "a"}], "k").json] == ["1", "2"]
        assert keyed(app, {"type": "a"}, "x").json["id"] == "3"
        assert keyed(app, {"type": "a"}, "y/0").json["id"] == "4"
        assert keyed(app, {"type": "a"}, "x/0").json["id"] == "9"  # "x" named a single job first
        assert keyed(app, {"type": "a"}, "k", status=409).json["error"] == "key_reused"
        assert column(store, "SELECT schedule_tick FROM jobs WHERE id = 5") == "nightly:1800000000.000"
        assert column(store, "SELECT COUNT(*) FROM jobs") == 9
    finally:
        store.close()


# -- 2. a long poll whose client has gone


def waiting(live):
    return live.client().request("GET", "/stats").json["waiting_workers"]


def test_a_long_poll_whose_client_left_frees_its_slot_and_claims_nothing(live):
    sock = open_long_poll(live)
    wait_until(lambda: waiting(live) == 1, what="the long poll to wait")
    sock.close()
    wait_until(lambda: waiting(live) == 0, timeout=5, what="the server to notice the client left")
    job = live.client().request("POST", "/jobs", {"type": "echo"}).json
    claimed = live.client(user="w2").request("POST", "/jobs/attempt", {"wait": 5})
    assert claimed.status == 201 and (claimed.json["id"], claimed.json["attempt"]) == (job["id"], "1")


def test_a_claim_whose_answer_cannot_be_written_goes_back_at_once_without_using_an_attempt(live, monkeypatch):
    job = live.client().request("POST", "/jobs", {"type": "echo", "max_attempts": 2}).json
    open_long_poll(live, "wait=0.5", lose_it_on_claim=monkeypatch)
    jobs = live.client()

    def released():
        now = jobs.request("GET", f"/jobs/{job['id']}").json
        return now if (now["status"], now["attempts"]) == ("pending", 1) else None

    back = wait_until(released, timeout=5, what="the job to come back")
    monkeypatch.undo()
    assert back["attempts"] == 1 and back["attempt"] is None
    assert jobs.request("GET", f"/jobs/{job['id']}/attempts").json == []
    worker = live.client(user="w2")
    claimed = worker.request("POST", "/jobs/attempt", {"wait": 5}).json
    assert (claimed["id"], claimed["attempt"]) == (job["id"], "2")  # attempt ids are never used twice
    failed = worker.request("PUT", f"/jobs/{job['id']}/attempts/2/error", {"boom": 1}).json
    assert failed["status"] == "pending"  # one of its two attempts used, not both
    metrics = jobs.request("GET", "/metrics").body.decode()
    assert 'lazyboss_claims_released_total{type="echo"} 1' in metrics


# -- 3. waiting workers and a paused type


@pytest.mark.parametrize("types", [None, ["slow"], ["slow", "other"]])
def test_waiting_workers_only_read_while_a_paused_type_holds_the_due_jobs(store, types):
    store.put_type("slow", {"paused": 1})
    submit(store, type="slow")
    statements = []
    with statements_of_this_thread(store, statements.append):
        assert store.wait_for_jobs("w1", types, 0.5) == []
    assert not any(begins_a_write(store) in sql for sql in statements)
    # A look when it starts and at its deadline; on PostgreSQL maybe one more, woken by the NOTIFY of the
    # submit above, which the listener hears after the store's own wake-up.
    assert len(statements) <= (6 if store.engine.keeps_a_file else 9)
