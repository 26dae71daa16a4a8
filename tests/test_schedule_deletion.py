"""Deleting a schedule fires it (bossman's `fire`): its jobs still pending are cancelled, unless kept."""

import base64
import sqlite3

import lazyboss

WORKER = {"Authorization": "Basic " + base64.b64encode(b"w1:").decode()}
EVERY_MINUTE = lazyboss.parse_every("1 minute")


def jobs_of(store, schedule):
    return dict(store.db.execute("SELECT id, status FROM jobs WHERE schedule = ? ORDER BY id", (schedule,)))


def ticked(app, store, clock, ticks, name="minutely", job_type="sync"):
    """A schedule that has fired `ticks` times; the ids of its jobs."""
    app.put_json(f"/schedules/{name}", {"type": job_type, "every": "1 minute"})
    for _ in range(ticks):
        clock.now = EVERY_MINUTE.next_after(clock.now)
        store.fire_due_schedules()
    return list(jobs_of(store, name))


def test_deleting_a_schedule_cancels_its_pending_jobs_and_says_how_many(app, store, clock):
    ids = ticked(app, store, clock, 4)
    on_demand = app.post("/schedules/minutely/run", status=202).json["id"]
    unrelated = app.post_json("/jobs", {"type": "sync"}, status=202).json["id"]
    running = app.post("/jobs/attempt?type=sync", headers=WORKER, status=201).json
    done = app.post("/jobs/attempt?type=sync", headers=WORKER, status=201).json
    app.put_json(f"/jobs/{done['id']}/attempts/{done['attempt']}/result", {}, headers=WORKER, status=201)
    assert [running["id"], done["id"]] == [str(ids[0]), str(ids[1])]  # the oldest go first

    answer = app.delete("/schedules/minutely")
    assert answer.status_int == 200 and answer.json == {"name": "minutely", "cancelled": 3}
    assert jobs_of(store, "minutely") == {
        ids[0]: "processing",
        ids[1]: "done",
        ids[2]: "cancelled",
        ids[3]: "cancelled",
        int(on_demand): "cancelled",
    }
    assert app.get(f"/jobs/{unrelated}").json["status"] == "pending"
    event = store.db.execute("SELECT kind, detail FROM events WHERE job_id = ? ORDER BY id DESC", (ids[2],)).fetchone()
    assert tuple(event) == ("cancelled", '{"reason":"schedule minutely was deleted"}')
    report = f"/jobs/{running['id']}/attempts/{running['attempt']}/result"
    assert app.put_json(report, {"ok": True}, headers=WORKER, status=201).json["status"] == "done"
    assert app.get("/schedules/minutely", status=404)
    assert store.count_jobs()["sync"] == {"done": 2, "cancelled": 3, "pending": 1}


def test_keep_pending_keeps_them(app, store, clock):
    ids = ticked(app, store, clock, 2)
    assert app.delete("/schedules/minutely?keep_pending=true").json == {"name": "minutely", "cancelled": 0}
    assert set(jobs_of(store, "minutely").values()) == {"pending"}
    assert len(ids) == 2


def test_a_bad_keep_pending_or_unknown_schedule_changes_nothing(app, store, clock):
    ticked(app, store, clock, 1)
    refused = app.delete("/schedules/minutely?keep_pending=yes", status=422).json
    assert "keep_pending must be true or false" in refused["detail"]
    assert app.get("/schedules/minutely").json["name"] == "minutely"
    assert set(jobs_of(store, "minutely").values()) == {"pending"}
    assert app.delete("/schedules/nightly", status=404).json["error"] == "not_found"


def test_only_the_deleted_schedules_jobs_go(app, store, clock):
    app.put_json("/schedules/a", {"type": "sync", "every": "1 minute"})
    ticked(app, store, clock, 2, name="b")
    assert app.delete("/schedules/a").json["cancelled"] == 2
    assert set(jobs_of(store, "b").values()) == {"pending"}


def test_an_older_file_knows_its_ticked_jobs_by_their_tick(db_path, clock):
    with sqlite3.connect(db_path) as db:  # a file of schema 10, with a schedule and the job of one tick
        for migration in lazyboss._MIGRATIONS[:10]:
            migration(db) if callable(migration) else db.executescript(migration)
        db.execute("PRAGMA user_version = 10")
        db.execute(
            """INSERT INTO schedules (name, type, parameters, every, timezone, next_run_at, created_at, updated_at)
               VALUES ('old', 'sync', '{}', '1 minute', 'UTC', 0, 0, 0)"""
        )
        db.execute(
            """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                   backoff_base, backoff_max, created_at, updated_at, schedule_tick)
               VALUES ('sync', 'pending', '{}', 0, 0, 3, 300, 1, 600, 0, 0, 'old:60.000')"""
        )
    upgraded = lazyboss.Store(db_path, clock=clock)
    try:
        assert upgraded.delete_schedule("old") == 1
    finally:
        upgraded.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT status, schedule FROM jobs").fetchall() == [("cancelled", "old")]


def test_the_python_client_says_how_many_it_cancelled(live):
    admin = lazyboss.Client(live.url)
    admin.request("PUT", "/schedules/soon", {"type": "sync", "every": "1 hour"})
    admin.request("POST", "/schedules/soon/run")
    admin.request("PUT", "/schedules/later", {"type": "sync", "every": "1 hour"})
    admin.request("POST", "/schedules/later/run")
    assert admin.delete_schedule("soon") == 1
    assert admin.delete_schedule("later", keep_pending=True) == 0
    assert [job["status"] for job in admin.jobs(type="sync")] == ["pending", "cancelled"]
