#!/usr/bin/env python3
"""jsonschema against fastjsonschema for lazyboss's per-type schemas, printed as JSON.

    python bench/schema_validators.py [--runs 5] [--validations 20000]

Each figure comes from a fresh interpreter per library (so one library's
imports do not help the other's), run --runs times, the median kept:
  - import_ms: importing the library;
  - rss_mib: resident memory the import and one compiled schema add;
  - compile_us: turning a job's parameters schema into a validator;
  - valid_us / invalid_us: one validation of a valid / an invalid document
    (the mean of --validations);
  - draft_2020_12: which 2020-12 keywords it applies (a document each that only
    that keyword refuses): prefixItems, dependentRequired, unevaluatedProperties,
    $defs with $ref, and minContains;
  - error: what it says of a failure: the path and the rule.
Both libraries must be installed (`pip install jsonschema fastjsonschema`).
"""

import argparse
import json
import statistics
import subprocess
import sys

# A job's parameters as a media-transcoding type might declare them.
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["source", "outputs"],
    "additionalProperties": False,
    "properties": {
        "source": {"type": "string", "pattern": "^s3://"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 10},
        "outputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["format", "height"],
                "properties": {
                    "format": {"enum": ["mp4", "webm", "hls"]},
                    "height": {"type": "integer", "minimum": 144, "maximum": 4320},
                    "bitrate": {"type": "number", "exclusiveMinimum": 0},
                },
            },
        },
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
VALID = {
    "source": "s3://bucket/in.mov",
    "priority": 3,
    "outputs": [{"format": "mp4", "height": 1080, "bitrate": 4.5}, {"format": "hls", "height": 720}],
    "tags": {"team": "media"},
}
INVALID = {**VALID, "outputs": [{"format": "mp4", "height": 1080}, {"format": "avi", "height": 720}]}

# Each keyword of 2020-12 with a schema using it and a document only that keyword refuses.
DRAFT_2020_12 = {
    "prefixItems": ({"prefixItems": [{"type": "integer"}]}, ["not an integer"]),
    "dependentRequired": ({"dependentRequired": {"a": ["b"]}}, {"a": 1}),
    "unevaluatedProperties": ({"properties": {"a": {}}, "unevaluatedProperties": False}, {"a": 1, "b": 2}),
    "$defs": ({"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"}, "not an integer"),
    "minContains": ({"contains": {"type": "integer"}, "minContains": 2}, [1, "x"]),
}

PROBE = r"""
import json, sys, time
def rss():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024
library, schema, valid, invalid, n, drafts = sys.argv[1], *map(json.loads, sys.argv[2:6]), json.loads(sys.argv[6])
before = rss()
start = time.perf_counter()
if library == "jsonschema":
    import jsonschema
    def compile_(schema):
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        return cls(schema, format_checker=cls.FORMAT_CHECKER)
    def failure(validator, document):
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
        return None if error is None else {"path": error.json_path, "rule": error.validator, "message": error.message}
else:
    import fastjsonschema
    def compile_(schema):
        return fastjsonschema.compile(schema)
    def failure(validator, document):
        try:
            validator(document)
        except fastjsonschema.JsonSchemaValueException as error:
            return {"path": error.path, "rule": error.rule, "message": error.message}
        return None
imported = time.perf_counter()
start_compile = time.perf_counter()
validator = compile_(schema)
compiled = time.perf_counter()
after = rss()
def timed(document):
    start = time.perf_counter()
    for _ in range(n):
        failure(validator, document)
    return (time.perf_counter() - start) / n * 1e6
applied = {}
for keyword, (piece, refused) in drafts.items():
    try:
        applied[keyword] = failure(compile_({"$schema": schema["$schema"], **piece}), refused) is not None
    except Exception as error:
        applied[keyword] = f"refused the schema: {type(error).__name__}"
print(json.dumps({
    "import_ms": (imported - start) * 1000,
    "rss_mib": after - before,
    "compile_us": (compiled - start_compile) * 1e6,
    "valid_us": timed(valid),
    "invalid_us": timed(invalid),
    "draft_2020_12": applied,
    "error": failure(validator, invalid),
}))
"""


def measure(library: str, runs: int, validations: int) -> dict:
    samples = []
    for _ in range(runs):
        arguments = [json.dumps(value) for value in (SCHEMA, VALID, INVALID, validations, DRAFT_2020_12)]
        output = subprocess.run(
            [sys.executable, "-c", PROBE, library, *arguments], capture_output=True, text=True, check=True
        ).stdout
        samples.append(json.loads(output))
    figures = {
        key: round(statistics.median(sample[key] for sample in samples), 2)
        for key in ("import_ms", "rss_mib", "compile_us", "valid_us", "invalid_us")
    }
    version = subprocess.run(
        [sys.executable, "-c", f"import importlib.metadata as m; print(m.version({library!r}))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return {"version": version, **figures, **{key: samples[0][key] for key in ("draft_2020_12", "error")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--validations", type=int, default=20000)
    args = parser.parse_args()
    report = {"python": sys.version.split()[0]}
    for library in ("jsonschema", "fastjsonschema"):
        report[library] = measure(library, args.runs, args.validations)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
