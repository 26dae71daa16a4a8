"""GET /openapi.json: the whole API in OpenAPI 3.1, the same routes the app serves, valid, and held to the
server's behaviour by schemathesis, a fuzzer nobody here wrote."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lazyboss
from support import ROOT, EventStream, ServerProcess, run_cli

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# What the fuzzer holds the server to: no 5xx, only listed statuses, bodies and headers as described, and
# 405 with a true Allow for every method a path lacks.
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
CHECKS += ",response_headers_conformance,unsupported_method,allow_header_conformance"
SEED = 20260518
EXAMPLES = 25  # per operation and phase: about 20 s per run on 2 cores
HOOKS = ROOT / "tests" / "schemathesis_hooks.py"
TOKEN = "fuzzer-admin"  # the admin mode's credential


def document_of(app):
    response = app.get("/openapi.json")
    assert response.status == "200 OK"
    assert response.content_type == "application/json"
    return response.json


def described(document):
    return {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}


def openapi_path(rule):
    """A Bottle route's rule (`/jobs/<job_id:id>`) as an OpenAPI path (`/jobs/{job_id}`)."""
    return re.sub(r"<(\w+)(:\w+)?>", r"{\1}", rule)


def served(bottle_app):
    return {(route.method, openapi_path(route.rule)) for route in bottle_app.routes}


def operation(document, method, path):
    return document["paths"][path][method.lower()]


def schema_validator(document, name):
    """A validator for one of the document's schemas, resolving its references inside the document."""
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", **document})


def test_the_document_needs_no_credentials_and_names_this_version(app, store):
    store.create_token("me", "admin")
    document = document_of(app)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == lazyboss.__version__
    assert app.get("/jobs", status=401).json["error"] == "unauthorized"


def test_every_route_served_is_described_and_every_operation_described_is_served(app):
    document = document_of(app)
    assert served(app.app) == described(document)
    assert len(described(document)) >= 32
    assert ("GET", "/openapi.json") in described(document)
    assert {("GET", "/"), ("POST", "/login"), ("POST", "/logout")} <= described(document)


def test_a_route_added_beside_the_table_shows_as_undescribed(store):
    app = lazyboss.make_app(store)
    app.route("/extra", "GET", lambda: "")
    document = lazyboss._openapi_document(lazyboss._ROUTES)
    assert served(app) - described(document) == {("GET", "/extra")}


def test_a_route_without_a_description_cannot_be_built():
    def route(path, operation):
        return lazyboss._Route("GET", path, lazyboss._Api.health, None, operation)

    with pytest.raises(ValueError, match="summary and its answers"):
        lazyboss._openapi_document((route("/x", {"responses": {"200": {"description": "x"}}}),))
    with pytest.raises(ValueError, match="summary and its answers"):
        lazyboss._openapi_document((route("/x", {"summary": "x", "responses": {}}),))
    with pytest.raises(ValueError, match="path parameter 'thing'"):
        lazyboss._openapi_document((route("/x/<thing>", {"summary": "x", "responses": {"200": {"description": "x"}}}),))


def test_each_operation_names_the_role_the_server_checks(app):
    document = document_of(app)
    for route in app.app.routes:
        described_route = operation(document, route.method, openapi_path(route.rule))
        role = route.config.get("role")
        assert described_route.get("x-lazyboss-role") == role, route.rule
        if role:
            assert {"basic": [role]} in described_route["security"]
            assert {"401", "403"} <= set(described_route["responses"])
    assert operation(document, "GET", "/health")["security"] == []
    assert operation(document, "POST", "/jobs/attempt")["x-lazyboss-role"] == "worker"


def test_the_document_is_valid_openapi_3_1(app):
    validator = pytest.importorskip("openapi_spec_validator")
    validator.validate(document_of(app))  # raises, saying where, when it is not


def test_refusals_carry_the_codes_the_document_lists(app):
    document = document_of(app)
    answer = app.post("/jobs/1/cancel", status=404)
    listed = operation(document, "POST", "/jobs/{job_id}/cancel")["responses"]["404"]
    assert answer.json["error"] in listed["content"]["application/json"]["schema"]["properties"]["error"]["enum"]
    codes = operation(document, "PUT", "/jobs/{job_id}/attempts/{attempt_id}/result")["responses"]["409"]
    assert codes["content"]["application/json"]["schema"]["properties"]["error"]["enum"] == [
        "expired",
        "cancelled",
        "finished",
    ]


def test_the_event_streams_answer_as_described(live):
    """/events never ends by itself, so the fuzzer leaves it out; this holds it to the document instead."""
    client = live.client()
    document = client.request("GET", "/openapi.json").json
    events = EventStream(live.url, "/events", {"Last-Event-ID": "0"})
    assert events.status == 200
    assert (
        events.response.getheader("Content-Type")
        in operation(document, "GET", "/events")["responses"]["200"]["content"]
    )
    assert client.request("POST", "/jobs", {"type": "a"}).status == 202
    schema_validator(document, "Event").validate(events.next_event()["data"])
    events.close()
    one = EventStream(live.url, "/jobs/1")
    first = one.next_event()
    schema_validator(document, "Job").validate(first["data"])
    one.close()
    for path, headers, status in (
        ("/events?job=x", {}, "404"),
        ("/events", {"Last-Event-ID": "x"}, "422"),
        ("/jobs/1", {"Accept": "text/event-stream", "Last-Event-ID": "x"}, "422"),
    ):
        answer = client.request("GET", path, headers=headers)
        assert answer.status == int(status)
        assert status in operation(document, "GET", path.split("?")[0].replace("/1", "/{job_id}"))["responses"]


def test_the_page_and_its_login_answer_as_described(app, store):
    """The fuzzer sends no Accept: text/html, so it only sees GET / answer 404; the browser's side is here."""
    document = document_of(app)
    page = operation(document, "GET", "/")["responses"]
    form = app.get("/", headers={"Accept": "text/html"})
    assert form.status_int == 200 and form.content_type in page["200"]["content"]
    again = app.get("/", headers={"Accept": "text/html", "If-None-Match": form.headers["ETag"]}, status=304)
    assert str(again.status_int) in page
    store.create_token("me", "admin")
    login = operation(document, "POST", "/login")["responses"]
    wrong = app.post("/login", {"token": "nope"}, headers={"Accept": "text/html"}, status=401)
    assert wrong.content_type in login["401"]["content"]
    secret = store.create_token("you", "client")
    answer = app.post("/login", {"token": secret}, status=303)
    assert set(login["303"]["headers"]) <= set(answer.headers)


# What schemathesis found with its further checks (schema-valid data refused, schema-violating data taken,
# methods a path lacks), each fixed in the server where the document was right.


def test_an_integer_may_be_written_with_a_zero_fraction(app):
    job = app.post_json("/jobs", {"type": "a", "priority": 2.0, "max_attempts": 5.0}, status=202).json
    assert (job["priority"], job["max_attempts"]) == (2, 5)
    assert app.put_json("/types/a", {"max_attempts": 4.0}).json["max_attempts"] == 4
    assert app.post_json("/jobs", {"type": "a", "max_attempts": 5.5}, status=422).json["error"] == "invalid"


def test_backoff_and_labels_are_objects_or_null_and_nothing_else_falsy(app):
    app.put_json("/types/a", {"backoff": {"base": 2, "max": 30}, "labels": {"team": "media"}})
    for falsy in (False, 0, "", []):
        assert app.put_json("/types/a", {"backoff": falsy}, status=422).json["error"] == "invalid"
        assert app.put_json("/types/a", {"labels": falsy}, status=422).json["error"] == "invalid"
    kept = app.get("/types/a").json
    assert (kept["backoff"], kept["labels"]) == ({"base": 2, "max": 30}, {"team": "media"})
    assert app.put_json("/types/a", {"backoff": None}).json["backoff"] == {"base": 1.0, "max": 600.0}
    assert app.put_json("/types/a", {"labels": {}}).json["labels"] == {}


def test_a_page_size_is_a_whole_number(app):
    for limit in ("2.5", "2.0", "1e2"):
        assert app.get(f"/jobs?limit={limit}", status=422).json["error"] == "invalid"
    assert app.get("/jobs?limit=2").json == {"jobs": [], "next": None}


def test_a_retention_in_seconds_may_be_any_json_number(app):
    assert app.put_json("/types/a", {"retain": 1e5}).json["retain"] == 100000
    assert app.put_json("/types/a", {"retain": 90}).json["retain"] == 90
    assert app.put_json("/types/a", {"retain": -1}, status=422).json["error"] == "invalid"


def test_a_claims_query_is_checked_even_when_its_body_says_more(app):
    app.post_json("/jobs", {"type": "a"})
    refused = app.post_json("/jobs/attempt?max=1001", {"max": 1}, status=422).json
    assert "'max'" in refused["detail"]
    assert app.get("/jobs/1").json["status"] == "pending"


def test_a_method_a_path_lacks_gets_405_with_what_it_allows(app):
    """/jobs/attempt is no job: GET /jobs/{job_id} takes digits only, so GET there is a method it lacks."""
    refused = app.get("/jobs/attempt", status=405)
    assert refused.json["error"] == "method_not_allowed"
    assert refused.headers["Allow"] == "POST"
    assert app.get("/jobs/abc", status=404).json["error"] == "not_found"


def seed_the_server(client):
    """A job claimed (job 1, attempt 1: the document's examples), one waiting, a type and a schedule."""
    assert client.request("POST", "/jobs", {"type": "thumbnail", "parameters": {"src": "a.png"}}).status == 202
    assert client.request("POST", "/jobs/attempt").status == 201
    assert client.request("POST", "/jobs", {"type": "report"}).status == 202
    assert client.request("PUT", "/types/thumbnail", {"timeout": 60}).status == 200
    assert client.request("PUT", "/schedules/nightly", {"type": "backup", "every": "0 3 * * *"}).status == 200


@pytest.mark.slow
@pytest.mark.skipif(not SCHEMATHESIS.exists(), reason="schemathesis (test extra, Python 3.11+) is not installed")
@pytest.mark.parametrize("mode", ["open", "admin"])
def test_schemathesis_finds_nothing(tmp_path, mode):
    """Every operation but /events, in every phase (examples, coverage, fuzzing, stateful through the links),
    against a real server process: in open mode (without POST /tokens, which would end it), and with an admin
    token (which nothing the fuzzer sends can revoke: no name it makes is this one's)."""
    database = tmp_path / "jobs.sqlite"
    secret = None
    if mode == "admin":
        secret = run_cli("--db", str(database), "token", "create", "--role", "admin", "--name", TOKEN).stdout.split()[0]
        options = ["--header", f"Authorization: Bearer {secret}"]
    else:
        options = ["--exclude-operation-id", "create_token"]
    server = ServerProcess(database, "--max-wait", "0.5", "--log-level", "warning")
    try:
        seed_the_server(server.client(token=secret))
        started = time.monotonic()
        run = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{server.url}/openapi.json", "--checks", CHECKS, "--seed", str(SEED)]
            + ["--max-examples", str(EXAMPLES), "--workers", "1", "--request-timeout", "10"]
            + ["--generation-database", "none", "--no-color", "--exclude-operation-id", "events", *options],
            cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "LAZYBOSS_FUZZER_TOKEN": TOKEN},
            capture_output=True,
            text=True,
            timeout=50,
        )
        print(f"schemathesis, {mode} mode: {time.monotonic() - started:.1f} s\n{run.stdout[-3000:]}")
        assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
        assert "Test cases:" in run.stdout
        # Still in the mode the run was meant to test: a revoked token or a new one would have left most
        # operations answering only 401, which the document lists, so that the run would pass unseen.
        assert server.client(token=secret).request("GET", "/tokens").status == 200
        assert server.client().request("GET", "/tokens").status == (200 if mode == "open" else 401)
    finally:
        server.stop()
    assert not [line for line in server.log if "internal error" in line or "Traceback" in line], server.log
