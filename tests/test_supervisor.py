"""The supervisor: credentials and roles, job types, workers, and recurring schedules."""

import base64
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest
import webtest

import lazyboss
from support import ROOT, Client, ServerProcess, free_port, run_cli, start_process, wait_until


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def basic(name, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{secret}".encode()).decode()}


@pytest.fixture
def tokens(store):
    return {role: store.create_token(f"the-{role}", role) for role in lazyboss.ROLES}


# -- credentials


def test_tokens_end_to_end_cli_creates_http_uses_revoke_is_immediate(tmp_path):
    db = tmp_path / "auth.sqlite"
    created = run_cli("--db", str(db), "token", "create", "--role", "worker", "--name", "w1")
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert len(secret) >= 30 and "shown only now" in created.stderr
    run_cli("--db", str(db), "token", "create", "--role", "client", "--name", "app")
    server = ServerProcess(db)
    try:
        worker = server.client(user=f"w1:{secret}")
        assert server.client().request("POST", "/jobs/attempt").status == 401
        assert worker.request("POST", "/jobs/attempt").status == 204
        bearer_worker = server.client(token=secret)
        assert bearer_worker.request("POST", "/jobs/attempt").status == 204
        listing = run_cli("--db", str(db), "token", "list")
        assert "w1" in listing.stdout and "worker" in listing.stdout and secret not in listing.stdout
        assert run_cli("--db", str(db), "token", "revoke", "w1").returncode == 0
        refused = worker.request("POST", "/jobs/attempt")
        assert refused.status == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    finally:
        server.stop()
    assert secret.encode() not in b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert secret not in "".join(server.log)


def test_a_token_allows_listening_beyond_loopback(tmp_path):
    db = tmp_path / "wide.sqlite"
    assert run_cli("--db", str(db), "--host", "0.0.0.0").returncode == 2
    run_cli("--db", str(db), "token", "create", "--role", "admin", "--name", "me")
    port = free_port()
    process = start_process(
        [sys.executable, str(ROOT / "lazyboss.py"), "--db", str(db), "--host", "0.0.0.0", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = Client(f"http://127.0.0.1:{port}", timeout=2)
        wait_until(lambda: _status(client, "/health") == 200, what="the server")
    finally:
        process.terminate()
        assert process.wait(10) == 0


def _status(client, path):
    try:
        return client.request("GET", path).status
    except OSError:
        return None


def test_revoking_every_token_beyond_loopback_shuts_the_door(store, tokens):
    app = webtest.TestApp(lazyboss.make_app(store, lazyboss.Config(host="0.0.0.0")))
    for name in list(tokens):
        store.revoke_token(f"the-{name}")
    response = app.get("/jobs", headers=bearer("anything"), status=401)
    assert "no token exists" in response.json["detail"]


# Each endpoint class, and the least role that may use it.
ENDPOINTS = [
    ("client", "GET", "/jobs", None),
    ("client", "POST", "/jobs", {"type": "a"}),
    ("client", "GET", "/events?last_event_id=0", None),
    ("client", "GET", "/metrics", None),
    ("worker", "POST", "/jobs/attempt", None),
    ("worker", "PUT", "/jobs/1/attempts/1/result", {}),
    ("admin", "POST", "/jobs/1/cancel", None),
    ("admin", "PUT", "/types/a", {"paused": False}),
    ("admin", "GET", "/workers", None),
    ("admin", "GET", "/tokens", None),
    ("admin", "PUT", "/schedules/s", {"type": "a", "every": "1 hour"}),
]


@pytest.mark.parametrize("role", [*lazyboss.ROLES, "nobody", "wrong"])
@pytest.mark.parametrize(("needed", "method", "path", "body"), ENDPOINTS)
def test_every_role_against_every_endpoint_class(store, tokens, role, needed, method, path, body):
    app = webtest.TestApp(lazyboss.make_app(store, lazyboss.Config(heartbeat=0.1)))
    headers = {"nobody": {}, "wrong": bearer("lb_not-a-token")}.get(role) or basic(f"the-{role}", tokens.get(role))
    if path == "/events?last_event_id=0":  # a stream: ask for nothing more than its first event
        store.submit_jobs([lazyboss.JobSpec(type="a")])
        store.stop_waiting()
    params = dict(headers=headers, expect_errors=True)
    response = app.request(
        path,
        method=method,
        body=(b"" if body is None else lazyboss._encode(body).encode()),
        content_type="application/json",
        **params,
    )
    if role in ("nobody", "wrong"):
        assert response.status_int == 401 and "WWW-Authenticate" in response.headers
    elif lazyboss._ROLE_RANK[role] < lazyboss._ROLE_RANK[needed]:
        assert response.status_int == 403 and response.json["error"] == "forbidden"
    else:
        assert response.status_int not in (401, 403), response.text


def test_health_needs_no_credentials(store, tokens):
    app = webtest.TestApp(lazyboss.make_app(store))
    assert app.get("/health").json["status"] == "ok"


def test_tokens_over_http_for_admins(store, tokens):
    app = webtest.TestApp(lazyboss.make_app(store))
    admin = bearer(tokens["admin"])
    made = app.post_json("/tokens", {"name": "w9", "role": "worker"}, headers=admin, status=201).json
    assert made["name"] == "w9" and made["secret"].startswith("lb_")
    assert app.post("/jobs/attempt", headers=bearer(made["secret"]), status=204)
    assert (
        app.post_json("/tokens", {"name": "w9", "role": "worker"}, headers=admin, status=409).json["error"] == "exists"
    )
    assert app.post_json("/tokens", {"name": "x", "role": "king"}, headers=admin, status=422)
    names = [token["name"] for token in app.get("/tokens", headers=admin).json]
    assert "w9" in names and all(
        "secret" not in token and "hash" not in token for token in app.get("/tokens", headers=admin).json
    )
    app.delete("/tokens/w9", headers=admin, status=204)
    app.post("/jobs/attempt", headers=bearer(made["secret"]), status=401)
    app.delete("/tokens/w9", headers=admin, status=404)


def test_a_worker_reports_only_on_its_own_attempts(store, tokens):
    app = webtest.TestApp(lazyboss.make_app(store))
    other = store.create_token("w2", "worker")
    app.post_json("/jobs", {"type": "a"}, headers=bearer(tokens["client"]))
    job = app.post("/jobs/attempt", headers=bearer(tokens["worker"])).json
    assert job["assignee"] == "the-worker"
    app.put_json(f"/jobs/{job['id']}/attempts/1/result", 1, headers=bearer(other), status=403)
    app.put_json(f"/jobs/{job['id']}/attempts/1/result", 1, headers=bearer(tokens["worker"]), status=201)


# -- job types


def test_a_paused_type_is_not_handed_out_until_resumed(app):
    app.put_json("/types/slow", {"paused": True})
    job = app.post_json("/jobs", {"type": "slow"}, status=202).json  # jobs keep queueing
    app.post("/jobs/attempt", status=204)
    kind = app.get("/types/slow").json
    assert kind["paused"] is True and kind["jobs"]["pending"] == 1
    app.put_json("/types/slow", {"paused": False})
    assert app.post("/jobs/attempt").json["id"] == job["id"]


def test_resuming_wakes_a_waiting_worker(live):
    admin = live.client()
    admin.request("PUT", "/types/later", {"paused": True})
    admin.request("POST", "/jobs", {"type": "later"})
    answer = {}
    poller = threading.Thread(target=lambda: answer.update(r=live.client().request("POST", "/jobs/attempt?wait=10")))
    poller.start()
    wait_until(lambda: admin.request("GET", "/stats").json["waiting_workers"] == 1, what="the long poll")
    resumed = time.monotonic()
    admin.request("PUT", "/types/later", {"paused": False})
    poller.join(10)
    assert answer["r"].status == 201 and time.monotonic() - resumed < 0.5


def test_job_fields_win_over_type_settings_which_win_over_defaults(app, clock):
    app.put_json("/types/mail", {"timeout": 30, "max_attempts": 5, "backoff": {"base": 10, "max": 15}})
    own = app.post_json("/jobs", {"type": "mail", "timeout": 7}).json
    assert (own["timeout"], own["max_attempts"]) == (7, 5)
    plain = app.post_json("/jobs", {"type": "other"}).json
    assert (plain["timeout"], plain["max_attempts"]) == (300, 3)
    app.post("/jobs/attempt?type=mail")
    retried = app.put_json(f"/jobs/{own['id']}/attempts/1/error", "x").json
    assert lazyboss.parse_time(retried["run_at"]) - clock.now == pytest.approx(15)  # 10·2¹ capped at 15
    app.put_json("/types/mail", {"timeout": None})
    assert app.get("/types/mail").json["timeout"] == 300


def test_types_list_settings_and_live_counts(app):
    app.post_json("/jobs", [{"type": "a"}, {"type": "a"}, {"type": "b"}])
    app.put_json("/types/c", {"retain": "2h"})
    kinds = {kind["type"]: kind for kind in app.get("/types").json}
    assert kinds["a"]["jobs"]["pending"] == 2 and kinds["a"]["configured"] is False
    assert kinds["c"]["retain"] == 7200 and kinds["c"]["jobs"]["pending"] == 0
    app.get("/types/nothing", status=404)


@pytest.mark.parametrize(
    "body",
    [{"timeout": "soon"}, {"max_attempts": 0}, {"paused": "yes"}, {"backoff": 3}, {"retain": "forever"}, {"color": 1}],
)
def test_bad_type_settings_are_422_and_change_nothing(app, body):
    app.put_json("/types/a", body, status=422)
    app.get("/types/a", status=404)


def test_type_retention_wins_over_the_default(app, store, clock):
    app.put_json("/types/brief", {"retain": "1m"})
    for job_type in ("brief", "normal"):
        job = app.post_json("/jobs", {"type": job_type}).json
        app.post(f"/jobs/{job['id']}/cancel")
    clock.advance(120)
    store.delete_finished_jobs(retain=3600)
    assert [job["type"] for job in app.get("/jobs").json["jobs"]] == ["normal"]


# -- workers


def test_workers_show_last_contact_current_work_and_outcomes(live):
    admin = live.client()
    assert live.client(user="idle").request("POST", "/jobs/attempt?wait=0.1").status == 204
    admin.request("POST", "/jobs", [{"type": "a"}, {"type": "a"}])
    busy = live.client(user="busy")
    first = busy.request("POST", "/jobs/attempt").json
    busy.request("PUT", f"/jobs/{first['id']}/attempts/1/result", 1)
    second = busy.request("POST", "/jobs/attempt").json
    workers = {worker["name"]: worker for worker in admin.request("GET", "/workers").json}
    assert workers["idle"]["last_seen_at"] and workers["idle"]["working_on"] == []
    assert workers["busy"]["done"] == 1
    (current,) = workers["busy"]["working_on"]
    assert (current["job"], current["attempt"]) == (second["id"], "1") and current["since"].endswith("Z")


# -- schedules


def test_an_interval_schedule_makes_one_job_per_tick(live):
    admin = live.client()
    schedule = admin.request("PUT", "/schedules/beat", {"type": "beat", "parameters": {"n": 1}, "every": "1 second"})
    assert schedule.status == 200 and schedule.json["every"] == "1 second"
    wait_until(lambda: len(admin.request("GET", "/jobs?type=beat").json["jobs"]) >= 3, what="three ticks")
    jobs = admin.request("GET", "/jobs?type=beat").json["jobs"][::-1]
    created = [lazyboss.parse_time(job["created_at"]) for job in jobs]
    gaps = [later - earlier for earlier, later in zip(created, created[1:])]
    assert all(0.5 < gap < 1.5 for gap in gaps), gaps
    assert all(job["parameters"] == {"n": 1} for job in jobs)
    listed = admin.request("GET", "/schedules").json[0]
    assert listed["last_job"] == jobs[-1]["id"] or int(listed["last_job"]) > int(jobs[-1]["id"])
    assert admin.request("DELETE", "/schedules/beat?keep_pending=true").json == {"name": "beat", "cancelled": 0}
    count = len(admin.request("GET", "/jobs?type=beat").json["jobs"])
    assert admin.request("GET", "/schedules/beat").status == 404
    assert admin.request("POST", "/schedules/beat/run").status == 404
    assert len(admin.request("GET", "/jobs?type=beat").json["jobs"]) <= count + 1  # a tick already under way


def test_two_servers_on_one_file_make_each_tick_once(tmp_path):
    db = tmp_path / "ticks.sqlite"
    servers = [ServerProcess(db, "--reap-interval", "0.05") for _ in range(2)]
    try:
        admin = servers[0].client()
        admin.request("PUT", "/schedules/beat", {"type": "beat", "every": "1 second"})
        started = time.time()
        wait_until(lambda: len(admin.request("GET", "/jobs?type=beat").json["jobs"]) >= 4, what="four ticks")
        elapsed = time.time() - started
        jobs = admin.request("GET", "/jobs?type=beat").json["jobs"]
        assert len(jobs) <= elapsed + 1  # one job a second, not two
    finally:
        for server in servers:
            server.stop()
    with sqlite3.connect(db) as check:
        ticks = [row[0] for row in check.execute("SELECT schedule_tick FROM jobs WHERE type = 'beat'")]
    assert len(ticks) == len(set(ticks)) and all(tick.startswith("beat:") for tick in ticks)


def test_missed_ticks_make_one_catch_up_job(app, store, clock):
    app.put_json("/schedules/hourly", {"type": "report", "every": "1 hour"})
    clock.advance(10 * 3600)  # the server was down for ten ticks
    assert store.fire_due_schedules() == 1
    assert store.fire_due_schedules() == 0
    clock.advance(3600)
    assert store.fire_due_schedules() == 1
    assert len(app.get("/jobs?type=report").json["jobs"]) == 2


def test_run_now_makes_one_job_beside_the_ticks(app):
    app.put_json("/schedules/nightly", {"type": "backup", "parameters": {"full": True}, "every": "0 3 * * *"})
    response = app.post("/schedules/nightly/run", status=202)
    assert response.json["parameters"] == {"full": True} and response.headers["Location"].endswith(response.json["id"])
    assert app.get("/schedules/nightly").json["last_job"] == response.json["id"]


@pytest.mark.parametrize(
    ("every", "mentions"),
    [
        ("every fortnight", "every fortnight"),
        ("61 * * * *", "minute"),
        ("* * 32 * *", "day of month"),
        ("0 0 30 2 *", "never"),
        ("5 minutes ago", "five-field"),
        (30, "string"),
    ],
)
def test_an_unknown_every_is_422_naming_what_was_not_understood(app, every, mentions):
    response = app.put_json("/schedules/x", {"type": "a", "every": every}, status=422)
    assert mentions in response.json["detail"]
    app.get("/schedules/x", status=404)


def utc(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@pytest.mark.parametrize(
    ("every", "zone", "after", "expected"),
    [
        ("*/5 * * * *", "UTC", "2026-01-01T00:02:30Z", "2026-01-01T00:05:00Z"),
        ("0 3 * * *", "UTC", "2026-01-01T04:00:00Z", "2026-01-02T03:00:00Z"),
        ("30 9 * * 1-5", "UTC", "2026-01-03T12:00:00Z", "2026-01-05T09:30:00Z"),  # Saturday → Monday
        ("0 12 * * sun", "UTC", "2026-01-01T00:00:00Z", "2026-01-04T12:00:00Z"),
        ("0 0 1 */3 *", "UTC", "2026-02-10T00:00:00Z", "2026-04-01T00:00:00Z"),
        ("0 0 29 feb *", "UTC", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
        ("0 0 1,15 * fri", "UTC", "2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z"),  # either day field
        ("15 10 * * *", "Europe/Berlin", "2026-01-10T12:00:00Z", "2026-01-11T09:15:00Z"),
        ("15 10 * * *", "Europe/Berlin", "2026-07-10T12:00:00Z", "2026-07-11T08:15:00Z"),
        ("30 2 * * *", "America/New_York", "2026-03-08T05:00:00Z", "2026-03-08T07:00:00Z"),  # skipped 2:30: at 3:00
        ("0-10/5 8-9 * * *", "UTC", "2026-01-01T08:10:00Z", "2026-01-01T09:00:00Z"),
        ("30 seconds", "UTC", "2026-01-01T00:00:10Z", "2026-01-01T00:00:30Z"),
        ("10 minutes", "UTC", "2026-01-01T00:02:30Z", "2026-01-01T00:10:00Z"),
        ("2 hours", "UTC", "2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"),
        ("1 day", "UTC", "2026-01-01T00:02:30Z", "2026-01-02T00:00:00Z"),
    ],
)
def test_next_times_of_known_expressions(every, zone, after, expected):
    tick = lazyboss.parse_every(every, zone).next_after(utc(after))
    assert datetime.fromtimestamp(tick, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") == expected


def test_revoking_the_last_token_warns_that_loopback_is_open_again(tmp_path):
    db = str(tmp_path / "last.sqlite")
    run_cli("--db", db, "token", "create", "--role", "admin", "--name", "a")
    run_cli("--db", db, "token", "create", "--role", "worker", "--name", "w")
    assert "open to anyone" not in run_cli("--db", db, "token", "revoke", "w").stderr
    assert "open to anyone on this host" in run_cli("--db", db, "token", "revoke", "a").stderr
