"""A `$ref` that resolves to something that is not a schema is refused at PUT (it answered 500 there, or
was stored and made every submit of its type answer 500)."""

import pytest


@pytest.mark.parametrize(
    "schema",
    [
        {"$defs": {"a": True}, "$ref": "#/$defs/a/x"},  # through a boolean schema
        {"minimum": 3, "$ref": "#/minimum/x"},  # through a number
        {"required": ["a"], "$ref": "#/required/0/z"},  # a list index that is no number
        {"const": "abc", "$ref": "#/const/0"},  # a character of a string
        {"required": ["a"], "$ref": "#/required/0"},  # a string
    ],
)
def test_a_reference_to_no_schema_is_refused_at_put_and_changes_nothing(app, schema):
    app.put_json("/types/t", {"timeout": 10})
    refusal = app.put_json("/types/t", {"parameters_schema": schema}, status=422).json
    assert refusal["error"] == "invalid_schema" and f"$ref {schema['$ref']!r} points to no schema" in refusal["detail"]
    assert app.get("/types/t").json["parameters_schema"] is None
    app.post_json("/jobs", {"type": "t", "parameters": "abc"}, status=202)


def test_a_reference_to_a_boolean_schema_or_an_array_item_is_taken(app):
    app.put_json(
        "/types/t",
        {
            "parameters_schema": {
                "$defs": {"no": False},
                "anyOf": [{"$ref": "#/$defs/no"}, {"$ref": "#/allOf/0"}],
                "allOf": [{"type": "integer"}],
            }
        },
    )
    app.post_json("/jobs", {"type": "t", "parameters": 1}, status=202)
    app.post_json("/jobs", {"type": "t", "parameters": "x"}, status=422)
