"""Loaded by schemathesis (SCHEMATHESIS_HOOKS) in test_openapi.py: how to send a batch as application/x-ndjson,
a media type POST /jobs takes and schemathesis has no serializer for (text/event-stream goes as text); and
that the run's own credential is not the fuzzer's to revoke."""

import json
import os

import schemathesis

OWN_TOKEN = os.environ.get("LAZYBOSS_FUZZER_TOKEN")


@schemathesis.serializer("application/x-ndjson")
def ndjson(context, value):
    """One JSON document per line: the items of a list, or the value itself when the fuzzer sent something else."""
    return "".join(json.dumps(item) + "\n" for item in (value if isinstance(value, list) else [value])).encode()


@schemathesis.hook
def before_call(context, case, kwargs):
    """A DELETE of the run's token (its name is in GET /tokens, where the stateful phase finds it) goes to a
    name nobody has: revoked, every later request would only get 401."""
    if OWN_TOKEN and case.operation.path == "/tokens/{name}" and case.path_parameters.get("name") == OWN_TOKEN:
        case.path_parameters["name"] = OWN_TOKEN + "-not"
