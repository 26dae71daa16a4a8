"""Memory and disk stay bounded with large jobs: events store what changed, listings and replays go in pieces."""

import json
import sqlite3

import pytest
import webtest

import lazyboss
from support import rows

LARGE = 400_000  # characters of parameters: a few jobs exceed the write budget


def submit(store, parameters, **fields):
    (view,) = store.submit_jobs([lazyboss.JobSpec(type="big", parameters=parameters, **fields)])
    return json.loads(view)


def event_bytes(store):
    return rows(
        store,
        """SELECT SUM(length(job) + COALESCE(length(result), 0) + COALESCE(length(error), 0)
               + COALESCE(length(detail), 0)) FROM events""",
    )[0][0]


def replay(store, job_id=None):
    """Every kept event's job whole, oldest first, as a job's stream rebuilds it from what each event set."""
    events, after, large = [], 0, {}
    while page := store.events_after(after, [job_id] if job_id else [], []):
        for event in page:
            events.append((event.kind, json.loads(event.whole_job(large.setdefault(event.job_id, {})))))
        after = page[-1].id
    return events


def test_progress_on_a_job_with_large_parameters_adds_little_to_the_event_log(store):
    job = submit(store, {"blob": "x" * 1_000_000})
    claimed = store.claim_next_job("w1")
    before = event_bytes(store)
    for number in range(1, 101):
        item = lazyboss.ProgressItem(number, "log_chunk", "8 bytes")
        store.record_progress(job["id"], claimed["attempt"], "w1", [item])
    assert event_bytes(store) - before < 100 * 1_000  # a full copy each time was 100 MB
    assert before < 5_000  # nor do the submit and the claim copy the parameters


def test_a_jobs_output_is_stored_once_and_streams_send_it_as_reported(store):
    job = submit(store, {})
    claimed = store.claim_next_job("w1")
    before = event_bytes(store)
    chunk = 'line one\nline "two" \u00e9\r\n' * 5_000
    sent = [(3, "log_chunk", chunk), (1, "percent", "50"), (2, "log_chunk", "{not json}")]
    store.record_progress(job["id"], claimed["attempt"], "w1", [lazyboss.ProgressItem(*item) for item in sent])
    assert event_bytes(store) - before < 2_000  # the 150 KB of output are kept in `progress` alone
    # A resend after a network error brings one new item: its event lists that one only.
    resent = [lazyboss.ProgressItem(1, "percent", "50"), lazyboss.ProgressItem(4, "log_chunk", "end")]
    store.record_progress(job["id"], claimed["attempt"], "w1", resent)
    events = [event for event in store.events_after(0, [job["id"]], []) if event.kind == "progress"]
    assert all("\n" not in event.data for event in events)  # one SSE data line each
    details = [json.loads(event.data)["detail"] for event in events]
    assert details == [
        {"attempt": claimed["attempt"], "events": [{"id": id, "event": name, "data": data} for id, name, data in sent]},
        {"attempt": claimed["attempt"], "events": [{"id": 4, "event": "log_chunk", "data": "end"}]},
    ]


def test_progress_events_of_an_older_file_are_sent_as_they_were_stored(store):
    job = submit(store, {})
    claimed = store.claim_next_job("w1")
    store.record_progress(job["id"], claimed["attempt"], "w1", [lazyboss.ProgressItem(1, "log_chunk", "new")])
    # Before the items were kept once, a progress event held them itself.
    stored = {"attempt": claimed["attempt"], "events": [{"id": 1, "event": "log_chunk", "data": "as it was"}]}
    store.db.execute("UPDATE events SET detail = ? WHERE kind = 'progress'", (json.dumps(stored),))
    (event,) = [event for event in store.events_after(0, [], []) if event.kind == "progress"]
    assert json.loads(event.data)["detail"] == stored


def test_a_result_or_error_is_not_copied_into_the_event_log(store, clock):
    job = submit(store, {}, max_attempts=3)
    output = {"stdout": "o" * 200_000}
    before = event_bytes(store)
    failed = store.fail_attempt(job["id"], store.claim_next_job("w1")["attempt"], "w1", {**output, "n": 1})
    clock.advance(3600)
    again = store.fail_attempt(job["id"], store.claim_next_job("w1")["attempt"], "w1", {**output, "n": 2})
    clock.advance(3600)
    done = store.complete_attempt(job["id"], store.claim_next_job("w1")["attempt"], "w1", output)
    assert event_bytes(store) - before < 5_000  # the job and its attempts hold the 200 KBs; the events refer to them
    replayed = [state for _, state in replay(store, job["id"])]
    assert failed in replayed and again in replayed and replayed[-1] == done == store.get_job(job["id"])
    assert json.loads(store.large_fields_at(job["id"], store.last_event_id())["result"]) == output
    assert [attempt["result"] for attempt in store.list_attempts(job["id"])] == [None, None, output]


def test_each_event_replays_the_job_as_it_was_then(store, clock):
    parameters = {"blob": "p" * 1000, "n": [1, 2.5, True, None]}
    job, seen = submit(store, parameters, max_attempts=2), []

    def next_attempt():
        clock.advance(3600)  # past any back-off
        return store.claim_next_job("w1")["attempt"]

    seen.append(store.fail_attempt(job["id"], next_attempt(), "w1", {"why": "first" * 300}))
    attempt = next_attempt()
    store.record_progress(job["id"], attempt, "w1", [lazyboss.ProgressItem(1, "percent", "50")])
    seen.append(store.fail_attempt(job["id"], attempt, "w1", "a plain string"))
    seen.append(store.retry_job(job["id"]))
    seen.append(store.complete_attempt(job["id"], next_attempt(), "w1", {"thumb": "t" * 2000}))
    assert [view["status"] for view in seen] == ["pending", "failed", "pending", "done"]
    events = replay(store, job["id"])
    assert all(event["parameters"] == parameters for _, event in events)
    replayed = [event for _, event in events]
    assert all(view in replayed for view in seen)  # every answer given is an event's job, large fields and all
    assert replayed[-1] == store.get_job(job["id"])


def test_a_replay_of_large_jobs_comes_in_pieces_within_the_budget(store):
    for _ in range(5):
        submit(store, "x" * LARGE)
    events = store.events_after(0, [], [])
    assert 1 < len(events) < 5 and sum(len(event.data) for event in events) < lazyboss._WRITE_BUDGET + LARGE + 1000
    assert len(replay(store)) == 5


@pytest.mark.sqlite_only  # a checkpoint of the WAL
def test_a_long_listing_of_large_jobs_goes_in_pages_and_holds_no_snapshot_between_them(store, db_path):
    ids = [submit(store, "x" * LARGE)["id"] for _ in range(6)]
    pages = store.list_jobs([], [], 5, None)
    views, following = next(pages)
    assert 1 < len(views) < 5 and following is None
    other = sqlite3.connect(db_path, isolation_level=None)  # a checkpoint is not held up by the half-read listing
    other.execute("INSERT INTO types (name, updated_at) VALUES ('t', 0)")
    assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    other.close()
    rest = list(pages)
    listed = [json.loads(view)["id"] for view in views] + [json.loads(v)["id"] for page, _ in rest for v in page]
    assert listed == ids[::-1][:5] and rest[-1][1] == int(ids[1])


def test_the_listing_over_http_is_one_json_document_with_its_cursor(store):
    app = webtest.TestApp(lazyboss.make_app(store))
    ids = [submit(store, "x" * LARGE)["id"] for _ in range(6)]
    first = app.get("/jobs?limit=5").json
    assert [job["id"] for job in first["jobs"]] == ids[::-1][:5] and first["jobs"][0]["parameters"] == "x" * LARGE
    rest = app.get(f"/jobs?limit=5&cursor={first['next']}").json
    assert [job["id"] for job in rest["jobs"]] == ids[:1] and rest["next"] is None
    assert app.get("/jobs?type=none").json == {"jobs": [], "next": None}


def test_events_of_an_older_file_lose_their_copies_and_replay_the_same(db_path):
    states = [  # the job as successive updates left it, each followed by an event of the old kind
        ("submitted", "status = 'pending'"),
        ("claimed", "status = 'processing', attempts = 1, attempt = 1, assignee = 'w1'"),
        ("retrying", """status = 'pending', error = '{"why":"no"}', attempt = NULL"""),
        ("claimed", "status = 'processing', attempts = 2, attempt = 2"),
        ("done", """status = 'done', result = '[1,true,"r"]', error = NULL"""),
        ("retried", "status = 'pending', result = NULL"),
    ]
    # The job as lazyboss wrote it then: before claims (migration 9).
    old_job_json = lazyboss._SQLiteSQL().job_json.replace(", 'claims', json(claims), 'claim_window', claim_window", "")
    assert "claims" not in old_job_json
    with sqlite3.connect(db_path) as db:
        for migration in lazyboss._MIGRATIONS[:4]:
            migration(db) if callable(migration) else db.executescript(migration)
        db.execute("PRAGMA user_version = 4")
        db.execute(
            """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                   backoff_base, backoff_max, created_at, updated_at)
               VALUES ('old', 'pending', '{"big":"xxxxxxxxxxxxxxxxxxxx"}', 0, 0, 3, 300, 1, 600, 0, 0)"""
        )
        before = []
        for kind, change in states:
            db.execute(f"UPDATE jobs SET {change} WHERE id = 1")
            db.execute(
                f"""INSERT INTO events (job_id, type, kind, at, job)
                    SELECT id, type, ?, updated_at, {old_job_json} FROM jobs WHERE id = 1""",
                (kind,),
            )
            before.append((kind, json.loads(db.execute(f"SELECT {old_job_json} FROM jobs").fetchone()[0])))
    store = lazyboss.Store(db_path)
    try:
        assert replay(store) == before
        with sqlite3.connect(db_path) as db:
            assert db.execute("SELECT COUNT(*) FROM events WHERE job LIKE '%xxxx%'").fetchone()[0] == 0
            assert db.execute("SELECT COUNT(*) FROM events WHERE result IS NOT NULL").fetchone()[0] == 2
    finally:
        store.close()
