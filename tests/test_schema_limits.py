"""JSON Schemas that would make the server fetch, fail or spin: each is refused at PUT, or its check ends
within lazyboss's time limit with a 422, and nothing is stored."""

import http.server
import sys
import threading
import time

import pytest
import webtest

import lazyboss
from support import Client, wait_until

# Python's `re` (jsonschema's engine) takes minutes for this: its backtracking grows 2.6 times with every
# character (0.12 s for 30).
REDOS = "^(a|aa)+$"
REDOS_TEXT = "a" * 46 + "!"


def job_count(app):
    return len(app.get("/jobs").json["jobs"])


def refused_in_time(call):
    limit = lazyboss._SCHEMA_CHECK_SECONDS * 4 + 2  # regex's timeout overshoots on a loaded machine
    started = time.monotonic()
    answer = call()
    assert time.monotonic() - started < limit
    return answer


@pytest.fixture
def web_server():
    """A web server on loopback that counts what is asked of it."""
    asked = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/schema+json")
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/schema.json", asked
    server.shutdown()
    server.server_close()


def test_a_reference_to_another_document_is_never_fetched_even_when_an_id_seems_to_name_it(app, web_server):
    url, asked = web_server
    # `$id` inside `const` is data, not an id: the reference points outside the schema.
    schema = {"properties": {"a": {"$ref": url}}, "$defs": {"decoy": {"const": {"$id": url}}}}
    app.put_json("/types/t", {"parameters_schema": schema}, status="*")
    answer = app.post_json("/jobs", {"type": "t", "parameters": {"a": 5}}, status="*")
    assert answer.status_int in (404, 422) or answer.status_int == 202 and job_count(app) == 1
    assert asked == []
    if app.get("/types/t", status="*").json.get("parameters_schema"):
        assert answer.status_int == 422 and job_count(app) == 0


@pytest.mark.parametrize(
    "schema, where",
    [
        ({"properties": {"a": {"pattern": "("}}}, "$.properties.a.pattern"),
        ({"patternProperties": {"\\": {}}}, "$.patternProperties"),
        ({"items": [{"pattern": "[z-a]"}], "$schema": "http://json-schema.org/draft-07/schema#"}, "$.items[0].pattern"),
    ],
)
def test_a_pattern_that_is_not_a_regular_expression_is_refused_at_put(app, schema, where):
    app.put_json("/types/t", {"timeout": 10})
    refusal = app.put_json("/types/t", {"parameters_schema": schema}, status=422).json
    assert refusal["error"] == "invalid_schema" and where in refusal["detail"], refusal
    assert app.get("/types/t").json["parameters_schema"] is None
    app.post_json("/jobs", {"type": "t", "parameters": {"a": "x"}}, status=202)


def test_patterns_written_for_ecmascript_work(app):
    app.put_json("/types/t", {"parameters_schema": {"properties": {"name": {"pattern": "^\\p{L}+$"}}}})
    app.post_json("/jobs", {"type": "t", "parameters": {"name": "ünï"}}, status=202)
    refusal = app.post_json("/jobs", {"type": "t", "parameters": {"name": "x1"}}, status=422).json
    assert "$.name" in refusal["detail"] and "rule 'pattern'" in refusal["detail"]


@pytest.mark.parametrize(
    "schema",
    [{"$ref": "#"}, {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}],
)
def test_a_schema_that_refers_to_itself_without_end_refuses_with_422_not_500(app, schema):
    app.put_json("/types/t", {"parameters_schema": schema}, status="*")
    refusal = app.post_json("/jobs", {"type": "t", "parameters": {"a": 1}}, status=422).json
    assert refusal["error"] == "invalid_parameters" and "refers to itself" in refusal["detail"]
    assert job_count(app) == 0


def test_a_catastrophic_pattern_is_cut_short_and_stores_nothing(app):
    app.put_json("/types/t", {"parameters_schema": {"properties": {"s": {"pattern": REDOS}}}})
    app.post_json("/jobs", {"type": "t", "parameters": {"s": "aaaa"}}, status=202)
    batch = [{"type": "t", "parameters": {"s": "a"}}, {"type": "t", "parameters": {"s": REDOS_TEXT}}]
    refusal = refused_in_time(lambda: app.post_json("/jobs", batch, status=422)).json
    assert refusal["error"] == "invalid_parameters" and "could not be checked" in refusal["detail"]
    assert job_count(app) == 1


def test_a_catastrophic_pattern_in_property_names_is_cut_short(app):
    schema = {"patternProperties": {REDOS: {"type": "integer"}}, "additionalProperties": False}
    app.put_json("/types/t", {"parameters_schema": schema})
    app.post_json("/jobs", {"type": "t", "parameters": {"aa": 1}}, status=202)
    refusal = app.post_json("/jobs", {"type": "t", "parameters": {"b": 1}}, status=422).json
    assert "'b' does not match any of the regexes" in refusal["detail"]
    refused_in_time(lambda: app.post_json("/jobs", {"type": "t", "parameters": {REDOS_TEXT: 1}}, status=422))
    assert job_count(app) == 1


def test_unevaluated_properties_beside_pattern_properties_is_refused_at_put(app):
    schema = {"allOf": [{"patternProperties": {"^x": {}}}], "unevaluatedProperties": False}
    refusal = app.put_json("/types/t", {"parameters_schema": schema}, status=422).json
    assert refusal["error"] == "invalid_schema" and "unevaluatedProperties" in refusal["detail"]
    app.get("/types/t", status=404)


def test_a_schema_whose_work_doubles_at_each_reference_is_cut_short(app):
    depth = 16  # 4 ** 16 keyword checks: hours
    definitions = {f"d{i}": {"allOf": [{"$ref": f"#/$defs/d{i + 1}"}] * 4} for i in range(depth)}
    definitions[f"d{depth}"] = {"type": "integer"}
    app.put_json("/types/t", {"parameters_schema": {"$defs": definitions, "$ref": "#/$defs/d0"}})
    refusal = refused_in_time(lambda: app.post_json("/jobs", {"type": "t", "parameters": 1}, status=422)).json
    assert "could not be checked" in refusal["detail"]
    assert job_count(app) == 0


def test_unique_items_over_many_objects_is_quick_and_right(store):
    app = webtest.TestApp(lazyboss.make_app(store, lazyboss.Config(max_body=1024 * 1024)))
    app.put_json("/types/t", {"parameters_schema": {"uniqueItems": True}})
    many = [{"n": index} for index in range(20_000)]
    started = time.monotonic()
    app.post_json("/jobs", {"type": "t", "parameters": many}, status=202)
    refusal = app.post_json("/jobs", {"type": "t", "parameters": [*many, {"n": 7}]}, status=422).json
    assert time.monotonic() - started < 5
    assert "rule 'uniqueItems'" in refusal["detail"]
    # JSON's equality: 1 and 1.0 are the same, true and 1 are not, nor are objects' key orders a difference.
    app.post_json("/jobs", {"type": "t", "parameters": [1, 1.0]}, status=422)
    app.post_json("/jobs", {"type": "t", "parameters": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}, status=422)
    app.post_json("/jobs", {"type": "t", "parameters": [True, 1, [1], [True], "1", None, 0, False]}, status=202)


def test_a_result_with_a_catastrophic_pattern_is_refused_and_the_attempt_goes_on(app):
    app.put_json("/types/t", {"result_schema": {"properties": {"s": {"pattern": REDOS}}}})
    job = app.post_json("/jobs", {"type": "t"}, status=202).json
    claim = app.post("/jobs/attempt", status=201).json
    where = f"/jobs/{job['id']}/attempts/{claim['attempt']}"
    refusal = refused_in_time(lambda: app.put_json(f"{where}/result", {"s": REDOS_TEXT}, status=422)).json
    assert refusal["error"] == "invalid_result" and "could not be checked" in refusal["detail"]
    assert app.get(f"/jobs/{job['id']}").json["status"] == "processing"
    app.put_json(f"{where}/result", {"s": "aaa"}, status=201)
    assert app.get(f"/jobs/{job['id']}").json["status"] == "done"


def test_without_the_regex_package_the_schema_extra_counts_as_missing(app, monkeypatch):
    monkeypatch.setitem(sys.modules, "regex", None)
    refusal = app.put_json("/types/t", {"parameters_schema": {"type": "object"}}, status=422).json
    assert refusal["error"] == "schema_unsupported" and "lazyboss[schema]" in refusal["detail"]


@pytest.mark.parametrize("checked", ["parameters", "result"])
def test_a_slow_check_holds_back_no_other_write(live, checked):
    admin = Client(live.url)
    schema = {"properties": {"s": {"pattern": REDOS}}}
    assert admin.request("PUT", "/types/slow", {f"{checked}_schema": schema}).status == 200
    if checked == "parameters":
        request = ("POST", "/jobs", {"type": "slow", "parameters": {"s": REDOS_TEXT}})
    else:
        admin.request("POST", "/jobs", {"type": "slow"})
        claim = admin.request("POST", "/jobs/attempt?type=slow").json
        request = ("PUT", f"/jobs/{claim['id']}/attempts/{claim['attempt']}/result", {"s": REDOS_TEXT})
    answers = []
    slow = threading.Thread(target=lambda: answers.append(Client(live.url, timeout=30).request(*request)))
    slow.start()
    wait_until(lambda: live_store_is_checking(live), what="the slow check to start")
    started = time.monotonic()
    assert admin.request("POST", "/jobs", {"type": "quick"}).status == 202
    assert admin.request("GET", "/health").status == 200
    assert time.monotonic() - started < 1.5, "another submit waited for the slow check"
    slow.join(timeout=30)
    assert answers[0].status == 422 and "could not be checked" in answers[0].json["detail"]


def live_store_is_checking(live):
    """True while some request thread is inside a schema check (the deadline is set there)."""
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code.co_name == "_schema_refusal":
                return True
            frame = frame.f_back
    return False
