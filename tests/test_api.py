"""The job API in-process (webtest) on a real SQLite file and on PostgreSQL: lifecycle, retries and every refusal."""

import base64
import json
import sqlite3

import pytest
import webtest

import lazyboss


def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


def submit(app, **fields):
    return app.post_json("/jobs", {"type": "echo", **fields}, status=202).json


def claim(app, user="w1", status=201, **query):
    query = "&".join(f"{key}={value}" for key, value in query.items())
    response = app.post(f"/jobs/attempt?{query}", headers=basic(user), status=status)
    return response.json if status == 201 else response


def count_rows(store, table="jobs"):
    return store.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


# -- submitting


def test_submit_answers_202_with_location_and_the_effective_defaults(app):
    response = app.post_json("/jobs", {"type": "resize", "parameters": {"w": 10}}, status=202)
    job = response.json
    assert response.headers["Location"] == f"/jobs/{job['id']}"
    assert response.content_type == "application/json"
    assert job["status"] == "pending" and job["parameters"] == {"w": 10}
    assert (job["priority"], job["max_attempts"], job["timeout"], job["attempts"]) == (0, 3, 300, 0)
    assert job["created_at"].endswith("Z") and job["run_at"] == job["created_at"]
    assert job["attempt"] is None and job["assignee"] is None and job["result"] is None
    assert isinstance(job["id"], str)
    assert app.get(response.headers["Location"]).json == job


def test_submit_keeps_the_jobs_own_settings(app):
    job = submit(app, priority=5, max_attempts=7, timeout=2.5, run_at="2030-01-01T00:00:00Z")
    assert (job["priority"], job["max_attempts"], job["timeout"]) == (5, 7, 2.5)
    assert job["run_at"] == "2030-01-01T00:00:00.000Z"


def test_type_settings_fill_in_what_the_job_leaves_out(app, store):
    with store.transaction() as db:
        db.execute("INSERT INTO types (name, timeout, max_attempts, updated_at) VALUES ('slow', 900, 5, 0)")
    job = app.post_json("/jobs", {"type": "slow", "max_attempts": 2}, status=202).json
    assert (job["timeout"], job["max_attempts"]) == (900, 2)


def test_delay_puts_run_at_in_the_future(app, clock):
    job = submit(app, delay=60)
    assert job["run_at"] == lazyboss.rfc3339(clock.now + 60)


def test_batch_submit_is_one_transaction(app, store):
    jobs = app.post_json("/jobs", [{"type": "a"}, {"type": "b", "priority": 2}], status=202).json
    assert [job["type"] for job in jobs] == ["a", "b"]
    response = app.post_json("/jobs", [{"type": "a"}, {"type": "b", "priority": "high"}], status=422)
    assert "job 1" in response.json["detail"] and "priority" in response.json["detail"]
    assert count_rows(store) == 2


def test_a_batch_over_10000_jobs_is_refused_whole(store):
    app = webtest.TestApp(lazyboss.make_app(store, lazyboss.Config(max_body=1 << 20)))  # the default limit
    refused = app.post_json("/jobs", [{"type": "a"}] * 10_001, status=413).json
    assert refused["error"] == "too_many_jobs" and "at most 10,000 jobs, not 10,001" in refused["detail"]
    ndjson = b'{"type": "a"}\n' * 10_001
    assert app.post("/jobs", ndjson, headers={"Content-Type": "application/x-ndjson"}, status=413)
    assert count_rows(store) == 0
    assert len(app.post_json("/jobs", [{"type": "a"}] * 10_000, status=202).json) == 10_000


def test_ndjson_batch(app):
    body = b'{"type": "a", "parameters": 1}\n\n{"type": "a", "parameters": 2}\n'
    response = app.post("/jobs", body, headers={"Content-Type": "application/x-ndjson"}, status=202)
    assert [job["parameters"] for job in response.json] == [1, 2]


def test_idempotency_key_returns_the_first_job(app, store):
    first = app.post_json("/jobs", {"type": "a"}, headers={"Idempotency-Key": "k1"}, status=202).json
    again = app.post_json("/jobs", {"type": "a", "priority": 9}, headers={"Idempotency-Key": "k1"}, status=202).json
    assert again == first
    batch = [{"type": "a"}, {"type": "b"}]
    jobs = app.post_json("/jobs", batch, headers={"Idempotency-Key": "k2"}, status=202).json
    assert app.post_json("/jobs", batch, headers={"Idempotency-Key": "k2"}, status=202).json == jobs
    assert count_rows(store) == 3


# -- reading


def test_get_unknown_job_is_a_json_404(app):
    for path in ("/jobs/999", "/jobs/abc", "/jobs/999/attempts", "/jobs/999/attempts/1"):
        response = app.get(path, status=404)
        assert response.json["error"] == "not_found" and response.json["detail"]


def test_list_is_newest_first_filtered_and_paged(app):
    ids = [submit(app, parameters=n)["id"] for n in range(5)]
    other = app.post_json("/jobs", {"type": "other"}, status=202).json["id"]
    listing = app.get("/jobs", params={"type": "echo", "limit": 2}).json
    assert [job["id"] for job in listing["jobs"]] == [ids[4], ids[3]]
    seen = [job["id"] for job in listing["jobs"]]
    while listing["next"]:
        listing = app.get("/jobs", params={"type": "echo", "limit": 2, "cursor": listing["next"]}).json
        seen += [job["id"] for job in listing["jobs"]]
    assert seen == ids[::-1]
    assert [job["id"] for job in app.get("/jobs").json["jobs"]] == [other, *ids[::-1]]
    claim(app)  # takes the oldest echo job, ids[0]
    assert [job["id"] for job in app.get("/jobs?status=processing").json["jobs"]] == [ids[0]]
    assert len(app.get("/jobs?status=pending,processing").json["jobs"]) == 6


def test_list_refuses_bad_filters(app):
    assert app.get("/jobs?status=running", status=422).json["error"] == "invalid"
    assert app.get("/jobs?limit=0", status=422).json["detail"].startswith("'limit'")
    assert app.get("/jobs?limit=ten", status=422).json["error"] == "invalid"
    assert app.get("/jobs?cursor=%%%", status=400).json["error"] == "bad_cursor"


# -- claiming


def test_claim_with_nothing_due_is_204(app):
    submit(app, delay=30)
    response = claim(app, status=204)
    assert response.body == b""


def test_claim_creates_an_attempt_for_the_named_worker(app):
    job = submit(app, parameters={"n": 1})
    response = app.post("/jobs/attempt", headers=basic("w1"), status=201)
    claimed = response.json
    assert response.headers["Location"] == f"/jobs/{job['id']}/attempts/1"
    assert claimed["id"] == job["id"] and claimed["status"] == "processing"
    assert claimed["assignee"] == "w1" and claimed["attempt"] == "1" and claimed["attempts"] == 1
    assert claimed["parameters"] == {"n": 1} and claimed["startedAt"].endswith("Z")
    attempt = app.get(response.headers["Location"]).json
    assert (attempt["worker"], attempt["status"], attempt["job"]) == ("w1", "processing", job["id"])


def test_worker_name_in_open_mode_is_the_basic_user_else_anonymous_never_a_bearer_text(app):
    submit(app)
    submit(app)
    submit(app)
    assert app.post("/jobs/attempt", headers=basic("w1")).json["assignee"] == "w1"
    assert app.post("/jobs/attempt", headers={"Authorization": "Bearer lb_secret"}).json["assignee"] == "anonymous"
    assert app.post("/jobs/attempt").json["assignee"] == "anonymous"


def test_claim_order_is_priority_then_oldest(app):
    low = submit(app)
    high = submit(app, priority=10)
    later = submit(app)
    assert [claim(app)["id"] for _ in range(3)] == [high["id"], low["id"], later["id"]]


def test_claim_filters_by_type_in_query_or_body(app):
    a = app.post_json("/jobs", {"type": "a"}).json
    b = app.post_json("/jobs", {"type": "b"}).json
    assert claim(app, type="b")["id"] == b["id"]
    claim(app, status=204, type="b")
    response = app.post_json("/jobs/attempt", {"types": ["x", "a"], "wait": 0}, status=201)
    assert response.json["id"] == a["id"]


def test_delayed_job_is_claimed_once_due(app, clock):
    job = submit(app, delay=10)
    claim(app, status=204)
    clock.advance(10)
    assert claim(app)["id"] == job["id"]


def test_claim_refuses_bad_wait_and_types(app):
    assert "wait" in app.post("/jobs/attempt?wait=soon", status=422).json["detail"]
    assert app.post_json("/jobs/attempt", {"types": "a"}, status=422).json["error"] == "invalid"
    assert app.post_json("/jobs/attempt", {"wiat": 3}, status=422).json["error"] == "invalid"


# -- reporting


def test_result_finishes_the_job_and_a_resend_is_harmless(app):
    job = submit(app)
    claim(app)
    path = f"/jobs/{job['id']}/attempts/1/result"
    done = app.put_json(path, {"size": 3}, headers=basic("w1"), status=201).json
    assert done["status"] == "done" and done["result"] == {"size": 3} and done["finished_at"]
    assert app.put_json(path, {"size": 3}, headers=basic("w1"), status=201).json == done
    attempt = app.get(f"/jobs/{job['id']}/attempts/1").json
    assert attempt["status"] == "done" and attempt["result"] == {"size": 3}


def test_report_from_another_worker_is_403_and_changes_nothing(app):
    job = submit(app)
    claim(app, user="w1")
    for kind in ("result", "error"):
        response = app.put_json(f"/jobs/{job['id']}/attempts/1/{kind}", {}, headers=basic("w2"), status=403)
        assert response.json["error"] == "forbidden"
    assert app.get(f"/jobs/{job['id']}").json["status"] == "processing"


def test_error_retries_with_backoff_then_fails(app, clock):
    job = submit(app, max_attempts=2)
    claim(app)
    retrying = app.put_json(f"/jobs/{job['id']}/attempts/1/error", {"why": "disk"}, headers=basic("w1"), status=201)
    retrying = retrying.json
    assert retrying["status"] == "pending" and retrying["error"] == {"why": "disk"}
    assert retrying["attempt"] is None and retrying["assignee"] is None
    delay = lazyboss.parse_time(retrying["run_at"]) - clock.now
    assert 1.4 <= delay <= 2.6  # 2 s ± 25 % jitter
    claim(app, status=204)
    clock.advance(3)
    assert claim(app)["attempt"] == "2"
    failed = app.put_json(f"/jobs/{job['id']}/attempts/2/error", {"why": "again"}, headers=basic("w1")).json
    assert failed["status"] == "failed" and failed["error"] == {"why": "again"} and failed["attempts"] == 2
    attempts = app.get(f"/jobs/{job['id']}/attempts").json
    assert [(a["id"], a["status"], a["error"]) for a in attempts] == [
        ("1", "failed", {"why": "disk"}),
        ("2", "failed", {"why": "again"}),
    ]


def test_expired_attempt_is_requeued_and_its_late_report_is_409(app, store, clock):
    job = submit(app, timeout=5)
    claim(app)
    clock.advance(4)
    assert store.expire_stale_attempts() == 0
    clock.advance(2)
    assert store.expire_stale_attempts() == 1
    requeued = app.get(f"/jobs/{job['id']}").json
    assert requeued["status"] == "pending" and requeued["error"]["error"] == "expired"
    response = app.put_json(f"/jobs/{job['id']}/attempts/1/result", {"late": True}, headers=basic("w1"), status=409)
    assert response.json["error"] == "expired"
    assert app.get(f"/jobs/{job['id']}").json == requeued
    assert app.get(f"/jobs/{job['id']}/attempts/1").json["status"] == "expired"


def test_last_attempt_expiring_fails_the_job(app, store, clock):
    job = submit(app, timeout=1, max_attempts=1)
    claim(app)
    clock.advance(2)
    store.expire_stale_attempts()
    assert app.get(f"/jobs/{job['id']}").json["status"] == "failed"


def test_result_after_an_error_is_409(app):
    job = submit(app, max_attempts=1)
    claim(app)
    app.put_json(f"/jobs/{job['id']}/attempts/1/error", "boom", headers=basic("w1"))
    response = app.put_json(f"/jobs/{job['id']}/attempts/1/result", 1, headers=basic("w1"), status=409)
    assert response.json["error"] == "finished"


# -- cancel and retry


def test_cancel_pending_and_processing(app):
    pending = submit(app)
    assert app.post(f"/jobs/{pending['id']}/cancel").json["status"] == "cancelled"
    running = submit(app)
    claim(app)
    cancelled = app.post(f"/jobs/{running['id']}/cancel").json
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
    for kind in ("result", "error"):
        response = app.put_json(f"/jobs/{running['id']}/attempts/1/{kind}", {}, headers=basic("w1"), status=409)
        assert response.json["error"] == "cancelled"
    assert app.post(f"/jobs/{running['id']}/cancel", status=409).json["error"] == "conflict"
    assert app.get(f"/jobs/{running['id']}/attempts/1").json["status"] == "cancelled"


def test_retry_gives_a_fresh_attempt_budget(app):
    job = submit(app, max_attempts=1)
    claim(app)
    app.put_json(f"/jobs/{job['id']}/attempts/1/error", "boom", headers=basic("w1"))
    retried = app.post(f"/jobs/{job['id']}/retry").json
    assert retried["status"] == "pending" and retried["error"] is None and retried["finished_at"] is None
    assert claim(app)["attempt"] == "2"
    assert app.post(f"/jobs/{job['id']}/retry", status=409).json["error"] == "conflict"
    app.put_json(f"/jobs/{job['id']}/attempts/2/error", "boom", headers=basic("w1"))
    assert app.get(f"/jobs/{job['id']}").json["status"] == "failed"


def test_cancel_and_retry_of_unknown_jobs_are_404(app):
    app.post("/jobs/77/cancel", status=404)
    app.post("/jobs/77/retry", status=404)
    app.put_json("/jobs/77/attempts/1/result", {}, status=404)


# -- refusals change nothing


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code", "mentions"),
    [
        (b'{"type": "a",', "application/json", 400, "bad_json", "JSON"),
        (b'{"type": 5}', "application/json", 422, "invalid", "type"),
        (b'{"type": "a b"}', "application/json", 422, "invalid", "type"),
        (b'{"parameters": {}}', "application/json", 422, "invalid", "type"),
        (b'{"type": "a", "max_attempts": 0}', "application/json", 422, "invalid", "max_attempts"),
        (b'{"type": "a", "max_attempts": true}', "application/json", 422, "invalid", "max_attempts"),
        (b'{"type": "a", "timeout": -1}', "application/json", 422, "invalid", "timeout"),
        (b'{"type": "a", "delay": "soon"}', "application/json", 422, "invalid", "delay"),
        (b'{"type": "a", "run_at": "2030-01-01T00:00:00"}', "application/json", 422, "invalid", "zone"),
        (b'{"type": "a", "run_at": "tomorrow"}', "application/json", 422, "invalid", "run_at"),
        (b'{"type": "a", "delay": 1, "run_at": 0}', "application/json", 422, "invalid", "not both"),
        (b'{"type": "a", "priorty": 1}', "application/json", 422, "invalid", "priorty"),
        (b"[]", "application/json", 422, "invalid", "empty"),
        (b'"a"', "application/json", 422, "invalid", "object"),
        (b'{"type": "a"}', "text/plain", 415, "unsupported_media_type", "application/json"),
        (b"\xff\xfe", "application/json", 400, "bad_json", "JSON"),
    ],
)
def test_bad_submissions_get_a_json_error_and_store_nothing(app, store, body, content_type, status, code, mentions):
    response = app.post("/jobs", body, headers={"Content-Type": content_type}, status=status)
    assert response.content_type == "application/json"
    assert response.json["error"] == code
    assert mentions in response.json["detail"]
    assert count_rows(store) == 0 and count_rows(store, "events") == 0


def test_body_over_the_limit_is_413(app, store, config):
    big = json.dumps({"type": "a", "parameters": "x" * config.max_body})
    response = app.post("/jobs", big, headers={"Content-Type": "application/json"}, status=413)
    assert response.json["error"] == "too_large"
    assert count_rows(store) == 0


def test_unknown_route_and_wrong_method_are_json(app):
    assert app.get("/nowhere", status=404).json["error"] == "not_found"
    response = app.patch("/jobs", status=405)
    assert response.json["error"] == "method_not_allowed" and "GET" in response.headers["Allow"]


def test_health_checks_the_database(app):
    expected = {"status": "ok", "version": lazyboss.__version__, "database": "ok", "reaper": "ok"}
    assert app.get("/health").json == expected


@pytest.mark.sqlite_only
def test_schema_version_is_recorded_and_reopening_is_harmless(store, db_path):
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(lazyboss._MIGRATIONS)
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    lazyboss.Store(db_path).close()


def test_a_newer_schema_is_refused(db_path):
    lazyboss.Store(db_path).close()
    with sqlite3.connect(db_path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(lazyboss.StorageError, match="newer"):
        lazyboss.Store(db_path)


# -- progress (the wire behaviour is in test_streams.py)


def put_progress(app, job, body, user="w1", status=202, **headers):
    return app.put(
        f"/jobs/{job['id']}/attempts/1/progress",
        body,
        headers={"Content-Type": "text/event-stream", **basic(user), **headers},
        status=status,
    )


def test_any_progress_renews_the_lease(app, store, clock):
    job = submit(app, timeout=5)
    claim(app)
    clock.advance(4)
    put_progress(app, job, "")  # a bare heartbeat
    clock.advance(4)
    assert store.expire_stale_attempts() == 0
    put_progress(app, job, "data: still working\n\n")
    clock.advance(4.9)
    assert store.expire_stale_attempts() == 0
    clock.advance(0.2)
    assert store.expire_stale_attempts() == 1
    put_progress(app, job, "data: late\n\n", status=409)
    assert app.get(f"/jobs/{job['id']}/attempts/1/log").text == "still working"


def test_a_heartbeat_is_not_an_event(app, store):
    job = submit(app)
    claim(app)
    before = count_rows(store, "events")
    assert put_progress(app, job, "").text == ""
    assert count_rows(store, "events") == before


def test_parse_progress_follows_the_event_stream_format():
    text = ": a comment\nid: 7\nevent: percent\ndata: 12.5\n\ndata: a\ndata: b\n\nevent: note\ndata:x\n"
    items = lazyboss.parse_progress(text, None)
    assert [(i.id, i.event, i.data) for i in items] == [
        (7, "percent", "12.5"),
        (8, "log_chunk", "a\nb"),
        (9, "note", "x"),
    ]
    assert [i.id for i in lazyboss.parse_progress("data: a\n\n", 41)] == [42]
    for bad in ("id: -1\ndata: x\n\n", "event: per cent\ndata: 1\n\n", "event: percent\ndata: 101\n\n"):
        with pytest.raises(lazyboss.Invalid):
            lazyboss.parse_progress(bad, None)


def test_an_older_file_is_migrated_in_place(db_path):
    with sqlite3.connect(db_path) as db:
        db.executescript(lazyboss._MIGRATIONS[0])
        db.execute("PRAGMA user_version = 1")
        db.execute(
            """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                   backoff_base, backoff_max, created_at, updated_at)
               VALUES ('old', 'pending', '{}', 0, 0, 3, 300, 1, 600, 0, 0)"""
        )
    store = lazyboss.Store(db_path)
    try:
        assert store.get_job("1")["type"] == "old"
        with sqlite3.connect(db_path) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == len(lazyboss._MIGRATIONS)
            assert db.execute("SELECT COUNT(*) FROM progress").fetchone()[0] == 0
    finally:
        store.close()
