"""JSON Schema per job type: parameters checked at submit, results at report, schemas checked at PUT."""

import base64
import sys

import pytest
import webtest

import lazyboss
from support import run_cli

TRANSCODE = {
    "type": "object",
    "required": ["source", "outputs"],
    "properties": {
        "source": {"type": "string", "pattern": "^s3://"},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "properties": {"format": {"enum": ["mp4", "webm"]}}},
        },
    },
}
GOOD = {"source": "s3://in.mov", "outputs": [{"format": "mp4"}]}
BAD_FORMAT = {"source": "s3://in.mov", "outputs": [{"format": "mp4"}, {"format": "avi"}]}
RESULT = {"type": "object", "required": ["url"], "properties": {"url": {"type": "string"}}}


def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


def job_count(app):
    return len(app.get("/jobs").json["jobs"])


@pytest.fixture
def transcode(app):
    app.put_json("/types/transcode", {"parameters_schema": TRANSCODE, "result_schema": RESULT})


# -- parameters


def test_parameters_that_fit_the_schema_are_taken(app, transcode):
    job = app.post_json("/jobs", {"type": "transcode", "parameters": GOOD}, status=202).json
    assert job["parameters"] == GOOD


def test_parameters_that_do_not_fit_get_422_naming_the_json_path_and_the_rule(app, transcode):
    refusal = app.post_json("/jobs", {"type": "transcode", "parameters": BAD_FORMAT}, status=422).json
    assert refusal["error"] == "invalid_parameters"
    assert "$.outputs[1].format" in refusal["detail"] and "rule 'enum'" in refusal["detail"]
    refusal = app.post_json("/jobs", {"type": "transcode", "parameters": {"outputs": []}}, status=422).json
    assert "at $:" in refusal["detail"] and "'source' is a required property" in refusal["detail"]
    assert "rule 'required'" in refusal["detail"]
    assert job_count(app) == 0


def test_a_batch_with_one_bad_job_stores_nothing_and_names_the_job(app, transcode):
    batch = [{"type": "transcode", "parameters": GOOD}, {"type": "other"}, {"type": "transcode", "parameters": {}}]
    refusal = app.post_json("/jobs", batch, status=422).json
    assert refusal["detail"].startswith("job 2: parameters at $:")
    assert job_count(app) == 0
    assert app.get("/stats").json["jobs"]["pending"] == 0


def test_other_types_and_types_without_a_schema_take_anything(app, transcode):
    app.post_json("/jobs", {"type": "other", "parameters": [1, "x"]}, status=202)
    app.put_json("/types/transcode", {"parameters_schema": None})
    app.post_json("/jobs", {"type": "transcode", "parameters": "anything"}, status=202)


def test_a_large_value_is_not_quoted_whole_in_the_refusal(app):
    app.put_json("/types/t", {"parameters_schema": {"type": "object", "properties": {"s": {"maxLength": 3}}}})
    refusal = app.post_json("/jobs", {"type": "t", "parameters": {"s": "x" * 20000}}, status=422).json
    assert "$.s" in refusal["detail"] and len(refusal["detail"]) < 500


def test_draft_7_and_2020_12_keywords_both_apply(app):
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "definitions": {"size": {"type": "integer", "minimum": 1}},
        "properties": {"size": {"$ref": "#/definitions/size"}},
    }
    app.put_json("/types/seven", {"parameters_schema": draft7})
    app.post_json("/jobs", {"type": "seven", "parameters": {"size": 2}}, status=202)
    assert "$.size" in app.post_json("/jobs", {"type": "seven", "parameters": {"size": 0}}, status=422).json["detail"]
    app.put_json("/types/twenty", {"parameters_schema": {"prefixItems": [{"type": "integer"}]}})
    refusal = app.post_json("/jobs", {"type": "twenty", "parameters": ["one"]}, status=422).json
    assert "$[0]" in refusal["detail"] and "rule 'type'" in refusal["detail"]


def test_a_schedule_s_parameters_are_checked_and_a_tick_that_no_longer_fits_makes_no_job(app, store, clock):
    app.put_json("/types/transcode", {"parameters_schema": TRANSCODE})
    schedule = {"type": "transcode", "parameters": {"source": "ftp://x", "outputs": []}, "every": "1 minute"}
    assert "$.source" in app.put_json("/schedules/nightly", schedule, status=422).json["detail"]
    app.put_json("/schedules/nightly", {**schedule, "parameters": GOOD})
    app.put_json("/types/transcode", {"parameters_schema": {**TRANSCODE, "required": ["source", "outputs", "x"]}})
    assert app.post("/schedules/nightly/run", status=422).json["error"] == "invalid_parameters"
    clock.advance(61)
    assert store.fire_due_schedules() == 1  # the tick passed: no job, and the schedule goes on
    assert job_count(app) == 0
    assert app.get("/schedules/nightly").json["next_run_at"] > app.get("/schedules/nightly").json["created_at"]


# -- results


def test_a_result_that_does_not_fit_gets_422_and_the_attempt_goes_on(app, transcode):
    job = app.post_json("/jobs", {"type": "transcode", "parameters": GOOD}).json
    claimed = app.post("/jobs/attempt", headers=basic("w1"), status=201)
    where = claimed.headers["Location"]
    refusal = app.put_json(f"{where}/result", {"url": 5}, headers=basic("w1"), status=422).json
    assert refusal["error"] == "invalid_result" and "$.url" in refusal["detail"]
    assert app.get(where).json["status"] == "processing"
    assert app.get(f"/jobs/{job['id']}").json["status"] == "processing"
    app.put_json(f"{where}/progress", {}, headers=basic("w1"), status=415)  # the lease is still its own
    done = app.put_json(f"{where}/result", {"url": "s3://out.mp4"}, headers=basic("w1"), status=201).json
    assert (done["status"], done["result"]) == ("done", {"url": "s3://out.mp4"})


def test_a_result_schema_set_by_another_server_on_the_database_holds_from_the_first_report(app, database):
    other = lazyboss.Store(database)
    try:
        app.post_json("/jobs", [{"type": "render"}] * 2)
        claimed = app.post("/jobs/attempt?max=2", headers=basic("w1")).json["jobs"]
        webtest.TestApp(lazyboss.make_app(other)).put_json("/types/render", {"result_schema": RESULT})
        for job in claimed:  # the first checked inside the write lock, the next before it
            where = f"/jobs/{job['id']}/attempts/{job['attempt']}/result"
            app.put_json(where, {"url": 5}, headers=basic("w1"), status=422)
            app.put_json(where, {"url": "s3://out"}, headers=basic("w1"), status=201)
    finally:
        other.close()


def test_an_error_report_is_not_checked_against_the_result_schema(app, transcode):
    app.post_json("/jobs", {"type": "transcode", "parameters": GOOD, "max_attempts": 1})
    where = app.post("/jobs/attempt", headers=basic("w1")).headers["Location"]
    assert app.put_json(f"{where}/error", {"why": "disk"}, headers=basic("w1"), status=201).json["status"] == "failed"


def test_batch_reports_judge_each_result_against_its_type_s_schema(app, transcode):
    app.post_json("/jobs", [{"type": "transcode", "parameters": GOOD}] * 2 + [{"type": "plain"}])
    claimed = app.post("/jobs/attempt?max=3", headers=basic("w1")).json["jobs"]
    reports = [
        {"job": claimed[0]["id"], "attempt": "1", "result": {"url": "s3://a"}},
        {"job": claimed[1]["id"], "attempt": "1", "result": {"no": "url"}},
        {"job": claimed[2]["id"], "attempt": "1", "result": "free-form"},
    ]
    answers = app.post_json("/jobs/reports", reports, headers=basic("w1")).json["reports"]
    assert [answer["status"] for answer in answers] == [201, 422, 201]
    assert answers[1]["error"] == "invalid_result" and "'url' is a required property" in answers[1]["detail"]
    assert app.get(f"/jobs/{claimed[1]['id']}").json["status"] == "processing"


# -- the schemas themselves


@pytest.mark.parametrize(
    "schema, named",
    [
        ({"type": "strng"}, "at $.type"),
        ({"properties": {"a": {"minimum": "one"}}}, "at $.properties.a.minimum"),
        ({"required": "a"}, "at $.required"),
        ({"$schema": "https://example.com/my-draft"}, "is not a draft lazyboss knows"),
        ({"$ref": "https://example.com/schema.json"}, "points outside the schema"),
        ({"properties": {"a": {"$ref": "#/$defs/missing"}}, "$defs": {"b": {}}}, "'#/$defs/missing' points to nothing"),
        ({"items": {"$ref": "#nowhere"}}, "'#nowhere' points to nothing in the schema"),
        ({"const": {"$id": "https://example.com/s"}, "$ref": "https://example.com/s"}, "points outside the schema"),
        ([1, 2], "must be a JSON Schema"),
    ],
)
def test_a_schema_that_is_not_valid_is_refused_at_put_and_changes_nothing(app, schema, named):
    app.put_json("/types/t", {"timeout": 10})
    refusal = app.put_json("/types/t", {"parameters_schema": schema, "timeout": 20}, status=422).json
    assert named in refusal["detail"] and refusal["detail"].startswith("parameters_schema")
    kind = app.get("/types/t").json
    assert (kind["timeout"], kind["parameters_schema"]) == (10, None)
    assert len(app.get("/types/t/versions").json["versions"]) == 1


def test_the_type_shows_its_schemas(app, transcode):
    kind = app.get("/types/transcode").json
    assert (kind["parameters_schema"], kind["result_schema"]) == (TRANSCODE, RESULT)
    assert kind["settings"] == {"parameters_schema": TRANSCODE, "result_schema": RESULT}


def test_without_the_schema_extra_a_schema_is_refused_saying_what_to_install(app, transcode, monkeypatch):
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # `import jsonschema` fails as if never installed
    refusal = app.put_json("/types/new", {"result_schema": RESULT}, status=422).json
    assert refusal["error"] == "schema_unsupported" and "pip install 'lazyboss[schema]'" in refusal["detail"]
    app.get("/types/new", status=404)
    app.put_json("/types/new", {"result_schema": None, "timeout": 5}, status=200)  # removing one needs nothing
    # A schema stored before is never skipped: its type's jobs wait for the extra.
    refusal = app.post_json("/jobs", {"type": "transcode", "parameters": GOOD}, status=503).json
    assert refusal["error"] == "schema_unsupported" and "lazyboss[schema]" in refusal["detail"]
    app.post_json("/jobs", {"type": "plain"}, status=202)


# -- across the wire


def test_over_http_and_the_command_line_a_refusal_names_the_path(server):
    admin = server.client()
    assert admin.request("PUT", "/types/transcode", {"parameters_schema": TRANSCODE}).status == 200
    answer = admin.request("POST", "/jobs", {"type": "transcode", "parameters": BAD_FORMAT})
    assert answer.status == 422 and "$.outputs[1].format" in answer.json["detail"]
    refused = run_cli("submit", "--server", server.url, "transcode", '{"source": "ftp://x", "outputs": []}')
    assert refused.returncode == 3
    assert "$.source" in refused.stderr and "rule 'pattern'" in refused.stderr and "422" in refused.stderr
    taken = run_cli("submit", "--server", server.url, "transcode", '{"source": "s3://x", "outputs": []}')
    assert taken.returncode == 0 and taken.stdout.strip().isdigit()
