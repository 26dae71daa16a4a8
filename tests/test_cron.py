"""Schedules read cron lines as cron(8) does: compared with cronsim, and through daylight-saving changes."""

import random
import time
import zoneinfo
from datetime import datetime, timedelta, timezone

import pytest

import lazyboss

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago", "Asia/Kolkata"]
FIELDS = [(0, 59, None), (0, 23, None), (1, 31, None), (1, 12, lazyboss._MONTH_NAMES), (0, 7, lazyboss._DAY_NAMES)]


def utc(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(timestamp):
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def spelled(rng, value, low, names):
    """A field value as a number, or sometimes as its name (jan, mon)."""
    if names and rng.random() < 0.3:
        return names[value - 1] if low == 1 else names[value % 7]
    return str(value)


def random_term(rng, low, high, names):
    shape = rng.choice(["value", "range", "range-step", "start-step", "star-step"])
    if shape == "star-step":
        return f"*/{rng.randint(1, high - low + 1)}"
    first = rng.randint(low, high if shape in ("value", "start-step") else high - 1)
    if shape == "value":
        return spelled(rng, first, low, names)
    if shape == "start-step":
        return f"{first}/{rng.randint(1, high - low + 1)}"
    # Not a one-value range with a step ("5-5/2"): cronsim reads it as "5/2", cron(8) as "5" (as we do).
    last = rng.randint(first + 1 if shape == "range-step" else first, high)
    span = f"{spelled(rng, first, low, names)}-{spelled(rng, last, low, names)}"
    return span if shape == "range" else f"{span}/{rng.randint(1, last - first + 2)}"


def random_field(rng, low, high, names):
    roll = rng.random()
    if roll < 0.35:
        return "*"
    if roll < 0.8:
        return random_term(rng, low, high, names)
    return ",".join(random_term(rng, low, high, names) for _ in range(rng.randint(2, 3)))


def random_line(rng):
    return " ".join(random_field(rng, *field) for field in FIELDS)


def transitions(zone, years):
    """Instants (hour resolution) around which `zone` changes its offset."""
    found, moment = [], datetime(years[0], 1, 1, tzinfo=timezone.utc)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year <= years[-1]:
        moment += timedelta(hours=1)
        if moment.astimezone(zone).utcoffset() != offset:
            offset = moment.astimezone(zone).utcoffset()
            found.append(moment.timestamp())
    return found


def cronsim_next(cronsim, line, zone, after):
    """cronsim's first tick strictly after `after` (it can answer a time in the past in a repeated hour)."""
    for tick in cronsim.CronSim(line, datetime.fromtimestamp(after, zone)):
        if tick.timestamp() > after:
            return tick.timestamp()
    raise AssertionError("unreachable")


def test_our_cron_agrees_with_cronsim_on_thousands_of_random_lines_in_six_zones():
    cronsim = pytest.importorskip("cronsim", reason="cronsim, the reference, comes with the test extra on Python 3.11+")
    rng = random.Random(20261025)
    zones = {name: zoneinfo.ZoneInfo(name) for name in ZONES}
    changes = {name: transitions(zone, range(2024, 2031)) for name, zone in zones.items()}
    compared, disagreements, started = 0, [], time.monotonic()
    for _ in range(3000):
        line = random_line(rng)
        name = rng.choice(ZONES)
        zone = zones[name]
        if changes[name] and rng.random() < 0.6:  # most starts within a day and a half of a DST change
            after = rng.choice(changes[name]) + rng.uniform(-36, 36) * 3600
        else:
            after = rng.uniform(utc("2024-01-01T00:00:00Z"), utc("2031-01-01T00:00:00Z"))
        try:
            cron = lazyboss.Cron(line)
            ours = cron.next_after(after, zone)
        except ValueError:
            ours = None
        try:
            theirs = cronsim_next(cronsim, line, zone, after)
        except (cronsim.CronSimError, StopIteration):
            theirs = None
        for _ in range(3):  # the next few ticks too
            if ours != theirs:
                disagreements.append((line, name, iso(after), ours and iso(ours), theirs and iso(theirs)))
            if ours is None or theirs is None:
                break
            compared += 1
            after, ours, theirs = ours, cron.next_after(ours, zone), cronsim_next(cronsim, line, zone, theirs)
    assert disagreements == []
    assert compared > 5000
    assert time.monotonic() - started < 30


def test_a_starred_day_field_means_both_day_fields_must_match():
    # "*/2" restricts the day of month but starts with "*": as in cron(8), a Monday that is an odd day.
    tick, zone = utc("2026-01-01T00:00:00Z"), zoneinfo.ZoneInfo("UTC")
    fired = []
    for _ in range(8):
        tick = lazyboss.Cron("0 9 */2 * 1").next_after(tick, zone)
        fired.append(datetime.fromtimestamp(tick, timezone.utc))
    assert all(moment.weekday() == 0 and moment.day % 2 == 1 and moment.hour == 9 for moment in fired)
    assert iso(fired[0].timestamp()) == "2026-01-05T09:00:00Z"
    # Both fields restricted without a "*": either one matches.
    either = lazyboss.Cron("0 9 1 * 1").next_after(utc("2026-01-01T10:00:00Z"), zone)
    assert iso(either) == "2026-01-05T09:00:00Z"


def fire_through(app, store, clock, every, start, end):
    """Run a Berlin schedule minute by minute from `start` to `end`; return when each job was made."""
    clock.now = utc(start)
    app.put_json("/schedules/dst", {"type": "dst", "every": every, "timezone": "Europe/Berlin"})
    fired = []
    while clock.now < utc(end):
        clock.advance(60)
        before = store.count_jobs().get("dst", {}).get("pending", 0)
        store.fire_due_schedules()
        if store.count_jobs().get("dst", {}).get("pending", 0) > before:
            fired.append(iso(clock.now))
    return fired


def test_fall_back_every_15_minutes_fires_through_the_repeated_hour(app, store, clock):
    # 2026-10-25 in Berlin: 03:00 CEST (01:00Z) goes back to 02:00 CET; 02:00-02:59 happens twice.
    fired = fire_through(app, store, clock, "*/15 * * * *", "2026-10-24T23:50:00Z", "2026-10-25T02:10:00Z")
    assert fired[0] == "2026-10-25T00:00:00Z" and fired[-1] == "2026-10-25T02:00:00Z"
    gaps = {utc(later) - utc(earlier) for earlier, later in zip(fired, fired[1:])}
    assert gaps == {15 * 60}, fired  # no 75-minute hole at the repeated hour
    assert len(fired) == 9


def test_fall_back_a_fixed_time_in_the_repeated_hour_fires_once(app, store, clock):
    fired = fire_through(app, store, clock, "30 2 * * *", "2026-10-24T20:00:00Z", "2026-10-26T03:00:00Z")
    assert fired == ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]  # 02:30 CEST, then 02:30 CET a day later


def test_fall_back_hourly_fires_at_both_two_oclocks(app, store, clock):
    fired = fire_through(app, store, clock, "0 * * * *", "2026-10-24T23:30:00Z", "2026-10-25T02:30:00Z")
    assert fired == ["2026-10-25T00:00:00Z", "2026-10-25T01:00:00Z", "2026-10-25T02:00:00Z"]


@pytest.mark.parametrize(
    ("every", "expected"),
    [
        # 2026-03-29 in Berlin: 02:00 CET (01:00Z) jumps to 03:00 CEST; 02:00-02:59 does not happen.
        ("30 2 * * *", ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]),  # skipped: right after the jump
        ("15,45 2 * * *", ["2026-03-29T01:00:00Z", "2026-03-30T00:15:00Z", "2026-03-30T00:45:00Z"]),
        ("*/30 * * * *", ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"]),
        ("30 * * * *", ["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"]),  # 02:30 CET never comes
    ],
)
def test_spring_forward_fixed_times_fire_after_the_jump_and_wildcards_go_on(app, store, clock, every, expected):
    end = "2026-03-30T01:00:00Z" if every.endswith("2 * * *") else "2026-03-29T01:45:00Z"
    assert fire_through(app, store, clock, every, "2026-03-29T00:01:00Z", end) == expected


@pytest.mark.parametrize(
    ("line", "minutes"),
    [("5-5/2 * * * *", {5}), ("5/20 * * * *", {5, 25, 45}), ("50-59/4,1 * * * *", {1, 50, 54, 58})],
)
def test_steps_as_cron_reads_them(line, minutes):
    assert lazyboss.Cron(line).minutes == minutes  # "5-5/2" is 5, as in cron(8) (cronsim reads it as "5/2")


@pytest.mark.parametrize("line", ["\u0663 * * * *", "*/\u0663 * * * *", "1 2 3 4 5 6", "* * * * 8", "*/0 * * * *"])
def test_lines_cron_refuses_are_refused(line):
    with pytest.raises(ValueError):
        lazyboss.parse_every(line)
