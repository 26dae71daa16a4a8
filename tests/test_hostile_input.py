"""Bad input never gets a 500: each case the edge-case review found is a 4xx JSON refusal that changes nothing."""

import base64
import json

import pytest
import webtest

import lazyboss
from support import ServerProcess, wait_until

DEEP = "[" * 150 + "]" * 150  # deeper than lazyboss takes, shallower than Python's recursion limit
HUGE = "9" * 30  # beyond 64 bits
SSE = {"Accept": "text/event-stream"}


def progress(text):
    return {"Content-Type": "text/event-stream", "body": text.encode()}


def json_body(text):
    return {"Content-Type": "application/json", "body": text.encode()}


def job(**fields):
    """A submission whose fields are given as raw JSON texts (the type defaults to "a")."""
    fields = {"type": '"a"', **fields}
    return json_body("{" + ", ".join(f'"{name}": {text}' for name, text in fields.items()) + "}")


def raw(text):
    """A header value as WSGI hands over the UTF-8 bytes of `text` (Latin-1 decoded)."""
    return text.encode().decode("latin-1")


def cursor(text):
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


ATTEMPT = "/jobs/1/attempts/1"

# (method, path, request settings, status, error code); job 1 exists and its attempt 1 runs.
CASES = [
    # JSON nested deeper than Python's parser goes, or than lazyboss takes
    ("POST", "/jobs", json_body("[" * 50_000), 400, "bad_json"),
    ("POST", "/jobs", job(parameters=DEEP), 400, "bad_json"),
    ("PUT", f"{ATTEMPT}/result", json_body(DEEP), 400, "bad_json"),
    ("PUT", "/schedules/s", json_body(f'{{"type": "a", "every": "1 hour", "parameters": {DEEP}}}'), 400, "bad_json"),
    # integers beyond 64 bits
    ("POST", "/jobs", job(priority=HUGE), 422, "invalid"),
    ("POST", "/jobs", job(max_attempts=HUGE), 422, "invalid"),
    ("POST", "/jobs", job(timeout=HUGE), 422, "invalid"),
    ("POST", "/jobs", job(delay=HUGE), 422, "invalid"),
    ("POST", "/jobs", job(run_at=("9" * 400)), 422, "invalid"),
    ("GET", "/jobs/1", {"headers": {**SSE, "Last-Event-ID": HUGE}}, 422, "invalid"),
    ("GET", f"/events?last_event_id={HUGE}", {}, 422, "invalid"),
    ("PUT", f"{ATTEMPT}/progress", progress(f"id: {HUGE}\ndata: x\n\n"), 422, "invalid"),
    ("PUT", f"{ATTEMPT}/progress", {**progress("data: x\n\n"), "headers": {"Last-Event-ID": HUGE}}, 422, "invalid"),
    ("GET", f"/jobs?cursor={cursor(HUGE)}", {}, 400, "bad_cursor"),
    ("PUT", "/schedules/s", job(every='"99999999999999999999 weeks"'), 422, "invalid"),
    ("PUT", "/types/a", json_body(f'{{"retain": {HUGE}}}'), 422, "invalid"),
    # NaN and infinities, spelled out or overflowing a double
    ("POST", "/jobs", job(parameters="NaN"), 400, "bad_json"),
    ("POST", "/jobs", job(parameters="[Infinity]"), 400, "bad_json"),
    ("POST", "/jobs", job(parameters='{"x": -Infinity}'), 400, "bad_json"),
    ("POST", "/jobs", job(parameters="1e999"), 400, "bad_json"),
    ("POST", "/jobs", job(run_at="NaN"), 400, "bad_json"),
    (
        "POST",
        "/jobs",
        {"Content-Type": "application/x-ndjson", "body": b'{"type": "a"}\n{"type": NaN}\n'},
        400,
        "bad_json",
    ),
    ("POST", "/jobs/attempt", json_body('{"wait": NaN}'), 400, "bad_json"),
    ("PUT", f"{ATTEMPT}/result", json_body("NaN"), 400, "bad_json"),
    ("PUT", f"{ATTEMPT}/error", json_body('{"code": Infinity}'), 400, "bad_json"),
    ("PUT", "/types/a", json_body('{"timeout": Infinity}'), 400, "bad_json"),
    # times that do not fit a calendar
    ("POST", "/jobs", job(delay="1e308"), 422, "invalid"),
    ("POST", "/jobs", job(run_at="1e300"), 422, "invalid"),
    ("POST", "/jobs", job(run_at="-1"), 422, "invalid"),
    # header bytes that are not UTF-8 (WSGI hands them over as Latin-1)
    ("GET", "/jobs", {"headers": {"Authorization": "Basic \xe9\xff"}}, 400, "bad_header"),
    ("GET", "/jobs", {"headers": {"Authorization": "Bearer \xe9\xff"}}, 400, "bad_header"),
    ("POST", "/jobs", {**json_body('{"type": "a"}'), "headers": {"Idempotency-Key": "k\xff"}}, 400, "bad_header"),
    ("GET", "/jobs/1", {"headers": {**SSE, "Last-Event-ID": "\xb2"}}, 400, "bad_header"),
    ("GET", "/jobs/1", {"headers": {"Accept": "text/\xff"}}, 400, "bad_header"),
    (
        "GET",
        "/jobs",
        {"headers": {"Authorization": "Basic " + base64.b64encode(b"\xff:x").decode()}},
        400,
        "bad_credentials",
    ),
    # ids are ASCII digits only
    ("GET", "/jobs/%C2%B2", {}, 404, "not_found"),
    ("GET", "/jobs/%D9%A1", {}, 404, "not_found"),  # an Arabic-Indic 1 is not job 1
    ("GET", "/jobs/1/attempts/%C2%B9", {}, 404, "not_found"),
    ("GET", "/jobs/1", {"headers": {**SSE, "Last-Event-ID": raw("١")}}, 422, "invalid"),
    ("PUT", f"{ATTEMPT}/progress", progress("id: ١\ndata: x\n\n"), 422, "invalid"),
    ("GET", f"/jobs?cursor={cursor('١')}", {}, 400, "bad_cursor"),
    # filters longer than SQLite takes
    ("POST", "/jobs/attempt?" + "&".join(f"type=t{n}" for n in range(501)), {}, 422, "invalid"),
    ("POST", "/jobs/attempt", json_body(json.dumps({"types": [f"t{n}" for n in range(501)]})), 422, "invalid"),
    ("GET", "/jobs?type=" + ",".join(f"t{n}" for n in range(501)), {}, 422, "invalid"),
    ("GET", "/events?job=" + ",".join(str(n) for n in range(501)), {}, 422, "invalid"),
    # names whose pattern a trailing newline slipped past
    ("POST", "/jobs", job(type='"a\\n"'), 422, "invalid"),
    ("PUT", "/types/a%0A", json_body('{"paused": true}'), 422, "invalid"),
    ("PUT", "/schedules/s%0A", job(every='"1 hour"'), 422, "invalid"),
    ("POST", "/tokens", json_body('{"name": "me\\n", "role": "admin"}'), 422, "invalid"),
]


def state(store):
    """What a refused request must not change: the jobs, the event log, the attempts' progress."""
    db = store.db
    return (
        db.execute("SELECT COUNT(*), MAX(updated_at) FROM jobs").fetchone()[:],
        store.last_event_id(),
        db.execute("SELECT COUNT(*) FROM progress").fetchone()[0],
        db.execute("SELECT COUNT(*) FROM schedules").fetchone()[0],
        db.execute("SELECT COUNT(*) FROM types").fetchone()[0],
        db.execute("SELECT COUNT(*) FROM tokens").fetchone()[0],
    )


@pytest.fixture
def running(app):
    """Job 1, claimed: attempt 1 runs, so reports reach their checks."""
    app.post_json("/jobs", {"type": "echo"}, status=202)
    app.post("/jobs/attempt", headers={"Authorization": "Basic " + base64.b64encode(b"w1:").decode()}, status=201)
    return app


@pytest.mark.parametrize("method, path, settings, status, code", CASES, ids=[f"{c[0]} {c[1][:60]}" for c in CASES])
def test_bad_input_is_refused_with_json_and_changes_nothing(running, store, method, path, settings, status, code):
    before = state(store)
    headers = {"Authorization": "Basic " + base64.b64encode(b"w1:").decode(), **settings.get("headers", {})}
    if "Content-Type" in settings:
        headers["Content-Type"] = settings["Content-Type"]
    response = running.request(path, method=method, body=settings.get("body", b""), headers=headers, expect_errors=True)
    assert response.status_int == status, response.body[:300]
    assert response.content_type == "application/json"
    assert response.json["error"] == code and response.json["detail"]
    assert state(store) == before


def test_an_arabic_indic_digit_does_not_name_job_1(running):
    assert running.get("/jobs/1").json["id"] == "1"
    assert running.get("/jobs/%D9%A1", status=404).json["error"] == "not_found"


def test_a_wait_too_big_for_a_float_is_capped_like_any_other(store):
    app = webtest.TestApp(lazyboss.make_app(store, lazyboss.Config(max_wait=0.05)))
    app.post("/jobs/attempt", '{"wait": %s}' % ("9" * 400), {"Content-Type": "application/json"}, status=204)


def test_a_claim_may_name_500_types_and_repeats_count_once(running):
    running.post_json("/jobs", {"type": "t499"}, status=202)
    types = [f"t{n}" for n in range(500)] * 3
    claimed = running.post_json("/jobs/attempt", {"types": types}, status=201).json
    assert claimed["type"] == "t499"


def test_the_limit_is_named_in_the_refusal(running):
    detail = running.post("/jobs/attempt?type=" + ",".join(f"t{n}" for n in range(501)), status=422).json["detail"]
    assert "500" in detail


def test_big_integers_inside_parameters_round_trip_exactly(running):
    big = 2**100 + 1
    submitted = running.post("/jobs", job(parameters=f'{{"n": {big}}}')["body"], {"Content-Type": "application/json"})
    assert running.get(f"/jobs/{submitted.json['id']}").json["parameters"] == {"n": big}


def test_the_last_moment_rfc_3339_can_write_is_accepted(running):
    job = running.post_json("/jobs", {"type": "a", "run_at": "9999-12-31T23:59:59Z"}, status=202).json
    assert job["run_at"] == "9999-12-31T23:59:59.000Z"


def test_json_nesting_up_to_the_limit_is_kept(running):
    depth = lazyboss._JSON_MAX_DEPTH - 2  # the job object and its parameters' list
    nested = "[" * depth + "]" * depth
    submitted = running.post("/jobs", job(parameters=nested)["body"], {"Content-Type": "application/json"}, status=202)
    assert json.dumps(running.get(f"/jobs/{submitted.json['id']}").json["parameters"]) == nested.replace("][", "], [")


# -- no one forges what is not theirs


def test_control_characters_from_a_client_are_escaped_in_the_log(tmp_path):
    server = ServerProcess(tmp_path / "jobs.sqlite")
    forged = "2026-01-01 00:00:00,000 INFO lazyboss: job 1 done"
    try:
        client = server.client()
        assert client.request("GET", "/jobs/1%0A" + forged.replace(" ", "%20")).status == 404
        assert client.request("POST", "/jobs", {"type": "a"}).status == 202
        worker = "w1\r\nINFO lazyboss forged\x1b[2J"  # a Basic user name ends at its first colon
        auth = {"Authorization": "Basic " + base64.b64encode(f"{worker}:".encode()).decode()}
        assert client.request("POST", "/jobs/attempt", headers=auth).json["assignee"] == worker
        wait_until(lambda: sum("job 1 claimed" in line for line in server.log), what="the claim's log line")
    finally:
        server.stop()
    assert not [line for line in server.log if line.startswith(forged)]
    assert not [line for line in server.log if "\x1b" in line or "\r" in line]
    assert [line for line in server.log if "GET /jobs/1\\n2026-01-01" in line]
    assert [line for line in server.log if "worker=w1\\r\\nINFO lazyboss forged\\x1b[2J" in line]


def test_in_open_mode_a_bearer_text_is_never_shown_or_logged(tmp_path):
    server = ServerProcess(tmp_path / "jobs.sqlite")
    try:
        client = server.client(token="lb_meant_for_another_server")
        job = client.request("POST", "/jobs", {"type": "a"}).json
        claimed = client.request("POST", "/jobs/attempt").json
        assert claimed["assignee"] == "anonymous"
        attempt = f"/jobs/{job['id']}/attempts/{claimed['attempt']}"
        assert client.request("PUT", f"{attempt}/result", {"ok": 1}).status == 201
        assert client.request("GET", f"{attempt}").json["worker"] == "anonymous"
        assert "lb_meant" not in client.request("GET", "/workers").body.decode()
        wait_until(lambda: sum("job 1 done" in line for line in server.log), what="the result's log line")
    finally:
        server.stop()
    assert not [line for line in server.log if "lb_meant" in line]


@pytest.mark.filterwarnings("ignore:Unknown REQUEST_METHOD")  # webtest's lint, about the very point
def test_metrics_label_only_known_methods_and_routes(running):
    for number in range(300):
        running.request(f"/nowhere/{number}", method=f"X{number}", expect_errors=True)
        running.request(f"/jobs/{number}/elsewhere", method="BREW", expect_errors=True)
    page = running.get("/metrics").text
    series = [line for line in page.splitlines() if line.startswith("lazyboss_http_request_duration_seconds_count")]
    methods = {line.split('method="')[1].split('"')[0] for line in series}
    routes = {line.split('route="')[1].split('"')[0] for line in series}
    assert methods <= {"GET", "POST", "other"} and "other" in methods
    assert "unmatched" in routes and not [route for route in routes if "nowhere" in route or "elsewhere" in route]
    assert len(series) < 10


def test_open_mode_refuses_a_host_name_that_only_starts_like_loopback(running):
    # DNS rebinding: a page of 127.attacker.example, whose name now points at 127.0.0.1.
    refused = running.get("/jobs", headers={"Host": "127.attacker.example"}, status=403).json
    assert refused["error"] == "host"
    assert running.get("/jobs", headers={"Host": "127.0.0.2:8080"}).status_int == 200
