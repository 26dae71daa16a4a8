"""A time renders the same everywhere: on both engines (a database copied from SQLite to PostgreSQL shows
every job's times to the millisecond as it did) and in Python (an event's `at` is its job's `updated_at`).
SQLite's strftime rounds through a julian day's milliseconds, not always to the nearest: the others follow it."""

import json
import random
import sqlite3

import lazyboss


def test_times_render_as_sqlite_renders_them(store):
    picks = random.Random(7)
    moments = [1_800_000_000 + picks.uniform(0, 86400 * 400) for _ in range(3000)]
    moments += [1_800_000_000 + n / 1000 + 0.0005 for n in range(500)]  # the halves, where rounding differs
    reference = sqlite3.connect(":memory:")
    wanted = [
        reference.execute("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?, 'unixepoch')", (at,)).fetchone()[0]
        for at in moments
    ]
    rendered = [
        store.db.execute(f"SELECT {store.engine.time('CAST(? AS DOUBLE PRECISION)')}", (at,)).fetchone()[0]
        for at in moments
    ]
    assert [pair for pair in zip(moments, rendered, wanted) if pair[1] != pair[2]] == []
    assert [at for at, text in zip(moments, wanted) if lazyboss.rfc3339(at) != text] == []


def test_an_events_time_is_its_jobs(store, clock):
    for _ in range(200):
        clock.advance(0.0004567)
        store.submit_jobs([lazyboss.JobSpec(type="t")])
    for event in store.events_after(0, [], []):
        sent = json.loads(event.data)
        assert sent["at"] == sent["job"]["updated_at"] == sent["job"]["created_at"]
