"""/openapi.json held to the server from outside: what an independent validator, a generated client and a
request-by-request comparison of the document with the answers found, each fixed where it was wrong."""

from test_openapi import document_of


def query_operations(document):
    """(method, path, operation) of every operation that takes query parameters."""
    for path, operations in document["paths"].items():
        for method, described in operations.items():
            if any(parameter["in"] == "query" for parameter in described["parameters"]):
                yield method, path, described


def test_query_values_are_read_as_utf8_as_clients_send_them(app):
    """WSGI hands the query over as Latin-1: ?label=site:zürich (sent as z%C3%BCrich) never matched a job
    claimed for site zürich, which the same label in a claim's JSON body took; refusals quoted mojibake."""
    app.post_json("/jobs", {"type": "a", "claims": {"site": "zürich"}})
    claimed = app.post("/jobs/attempt?label=site:z%C3%BCrich", status=201).json
    assert claimed["claims"] == {"site": "zürich"}
    app.put_json("/types/b", {"labels": {"site": "zürich"}})
    assert [found["type"] for found in app.get("/types?label=site:z%C3%BCrich").json] == ["b"]
    assert "'ü'" in app.get("/jobs?status=%C3%BC", status=422).json["detail"]


def test_a_query_that_is_not_utf8_is_refused_as_the_document_says(app):
    app.post_json("/jobs", {"type": "a", "claims": {"site": "x"}})
    refused = app.post("/jobs/attempt?label=site:%FF", status=400).json
    assert refused["error"] == "bad_query" and "'label'" in refused["detail"]
    assert app.get("/jobs/1").json["status"] == "pending"
    document = document_of(app)
    for method, path, described in query_operations(document):
        codes = described["responses"]["400"]["content"]["application/json"]["schema"]["properties"]["error"]
        assert "bad_query" in codes["enum"], (method, path)
