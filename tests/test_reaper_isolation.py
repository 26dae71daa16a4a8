"""The reaper under a failing task: one bad schedule (or bug) never stops the rest, never floods the log,
never spins; a tick already held by a job takes that job; UTC and intervals need no time zone database."""

import json
import logging
import sqlite3
import threading
import time
import zoneinfo

import pytest
import webtest

import lazyboss
from support import NotifySocket, ServerProcess, wait_until


class TimeZoneDatabase:
    """This process's time zone database, which a test may take away (as on a host without Debian's tzdata, or
    PYTHONTZPATH=/nonexistent) and give back."""

    def __init__(self):
        self.path = zoneinfo.TZPATH

    def remove(self):
        zoneinfo.reset_tzpath(to=[])
        zoneinfo.ZoneInfo.clear_cache()

    def restore(self):
        zoneinfo.reset_tzpath(to=self.path)
        zoneinfo.ZoneInfo.clear_cache()


@pytest.fixture
def time_zones():
    database = TimeZoneDatabase()
    yield database
    database.restore()


def schedule_view(app, name):
    return app.get(f"/schedules/{name}").json


def jobs_of(app, job_type):
    return app.get(f"/jobs?type={job_type}&limit=100").json["jobs"]


def test_utc_and_intervals_need_no_time_zone_database(app, time_zones):
    time_zones.remove()
    assert app.put_json("/schedules/a", {"type": "a", "every": "1 second"}).status_int == 200
    assert app.put_json("/schedules/b", {"type": "b", "every": "*/5 * * * *", "timezone": "UTC"}).status_int == 200
    refused = app.put_json("/schedules/c", {"type": "c", "every": "0 3 * * *", "timezone": "Europe/Berlin"}, status=422)
    assert "no time zone database" in refused.json["detail"] and "tzdata" in refused.json["detail"]


def test_a_failing_schedule_is_skipped_and_recorded_logged_once_while_the_others_fire(
    app, store, clock, caplog, time_zones
):
    store.put_schedule("nightly", "backup", {}, lazyboss.parse_every("* * * * *", "Europe/Berlin"))
    store.put_schedule("often", "poll", {}, lazyboss.parse_every("1 minute"))
    time_zones.remove()  # made with the database, then served without it
    with caplog.at_level(logging.WARNING, logger="lazyboss"):
        for _ in range(3):
            clock.advance(60)
            assert store.fire_due_schedules() == 2
    assert len(jobs_of(app, "poll")) == 3 and jobs_of(app, "backup") == []
    nightly = schedule_view(app, "nightly")
    assert "unknown time zone 'Europe/Berlin'" in nightly["last_error"]["detail"]
    assert lazyboss.parse_time(nightly["next_run_at"]) == clock.now + 60  # tried again in a minute, not each round
    assert schedule_view(app, "often")["last_error"] is None
    skipped = [record for record in caplog.records if "skipped" in record.getMessage()]
    assert len(skipped) == 1 and "nightly" in skipped[0].getMessage()
    time_zones.restore()  # the database is installed: it fires again
    clock.advance(60)
    store.fire_due_schedules()
    assert len(jobs_of(app, "backup")) == 1 and schedule_view(app, "nightly")["last_error"] is None


def old_file_with_a_client_key_shaped_as_a_tick(db_path, key):
    """A file of a release that kept clients' keys and schedule ticks in one column, with a client's job under
    `key` (schema 3, as the releases before migration 4 left it)."""
    with sqlite3.connect(db_path) as db:
        for migration in lazyboss._MIGRATIONS[:3]:
            db.executescript(migration)
        db.execute("PRAGMA user_version = 3")
        db.execute(
            """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                   backoff_base, backoff_max, created_at, updated_at, idempotency_key)
               VALUES ('planted', 'pending', '{}', 0, 0, 3, 300, 1, 600, 0, 0, ?)""",
            (key,),
        )


def test_a_tick_already_held_by_a_job_takes_that_job_and_its_key_still_names_it(db_path, clock):
    tick = 1_800_003_600.0  # a whole hour, after the clock's start
    old_file_with_a_client_key_shaped_as_a_tick(db_path, f"schedule:s:{tick:.3f}")
    store = lazyboss.Store(db_path, clock=clock)
    try:
        app = webtest.TestApp(lazyboss.make_app(store))
        store.put_schedule("s", "sched", {}, lazyboss.parse_every("1 hour"))
        assert schedule_view(app, "s")["next_run_at"] == lazyboss.rfc3339(tick)
        clock.now = tick
        assert store.fire_due_schedules() == 1  # not an IntegrityError for ever
        view = schedule_view(app, "s")
        assert view["last_job"] == "1" and view["last_error"] is None
        assert lazyboss.parse_time(view["next_run_at"]) == tick + 3600
        resent = app.post_json("/jobs", {"type": "planted"}, headers={"Idempotency-Key": f"schedule:s:{tick:.3f}"})
        assert resent.json["id"] == "1"  # the old key still names its job: no duplicate
        assert len(app.get("/jobs").json["jobs"]) == 1
    finally:
        store.close()


def stale_attempt(store, clock):
    (view,) = store.submit_jobs([lazyboss.JobSpec("echo", timeout=1)])
    store.claim_next_job("w1")
    clock.advance(5)
    return json.loads(view)["id"]


def test_one_failing_task_stops_neither_the_others_nor_the_round_and_is_logged_once(store, clock, caplog, monkeypatch):
    def broken():
        raise RuntimeError("a bug in one task")

    monkeypatch.setattr(store, "fire_due_schedules", broken)
    reaper = lazyboss.Reaper(store, interval=0.1)
    with caplog.at_level(logging.WARNING, logger="lazyboss"):
        for _ in range(3):
            job = stale_attempt(store, clock)
            reaper.run_once()
            assert store.get_job(job)["status"] == "pending"  # expiry ran after (and despite) the failing task
    assert reaper.healthy()
    failures = [record for record in caplog.records if "schedules failed" in record.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is not None
    monkeypatch.undo()
    with caplog.at_level(logging.WARNING, logger="lazyboss"):
        reaper.run_once()
    assert any("schedules works again" in record.getMessage() for record in caplog.records)


def rounds_in(reaper, seconds):
    rounds = []
    reaper.run_once = lambda: rounds.append(1)
    reaper.start()
    time.sleep(seconds)
    reaper.stop()
    reaper.join(5)
    return len(rounds)


def test_the_reaper_never_spins_when_a_schedule_stays_due(store, monkeypatch):
    monkeypatch.setattr(store, "seconds_until_next_schedule", lambda: 0.0)
    assert rounds_in(lazyboss.Reaper(store, interval=1.0), 0.5) <= 0.5 / lazyboss.Reaper.MIN_PAUSE + 1
    failing = lazyboss.Reaper(store, interval=0.2)
    failing._failing["schedules"] = "RuntimeError: still failing"  # its schedules failed: they set no pace
    assert rounds_in(failing, 0.5) <= 3


def test_a_server_without_time_zone_database_fires_its_intervals_and_pets_the_watchdog(tmp_path):
    db = tmp_path / "tz.sqlite"
    store = lazyboss.Store(str(db))
    store.put_schedule("nightly", "backup", {}, lazyboss.parse_every("* * * * *", "Europe/Berlin"))
    store.put_schedule("other", "poll", {}, lazyboss.parse_every("1 second"))
    store.close()
    with sqlite3.connect(db) as file:
        file.execute("UPDATE schedules SET next_run_at = 0")  # both due at once
    notify = NotifySocket(tmp_path)
    environment = {"PYTHONTZPATH": "/nonexistent", "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"}
    server = ServerProcess(db, "--reap-interval", "0.05", env=environment)
    threading.Thread(target=notify.keep_reading, daemon=True).start()  # as systemd, which never stops reading
    try:
        client = server.client()
        wait_until(
            lambda: len(client.request("GET", "/jobs?type=poll").json["jobs"]) >= 3, what="three ticks of 'other'"
        )
        assert any("WATCHDOG=1" in message.split("\n") for message in notify.received)
        assert client.request("GET", "/health").status == 200
        nightly = client.request("GET", "/schedules/nightly").json
        assert "no time zone database" in nightly["last_error"]["detail"]
    finally:
        server.stop()
    assert sum("skipped" in line for line in server.log) == 1
    assert not any("Traceback" in line for line in server.log)
