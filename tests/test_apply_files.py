"""`lazyboss apply` given files a careless operator writes: each mistake is named, exit 2, nothing sent."""

import sys

import pytest

from support import run_cli

needs_tomllib = pytest.mark.skipif(sys.version_info < (3, 11), reason="reading TOML needs tomllib (Python 3.11+)")
NOWHERE = "http://127.0.0.1:9"  # nothing may be sent: a server is not even needed


def apply(path):
    return run_cli("apply", "--server", NOWHERE, str(path))


def refused(finished, *mentions):
    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr, finished.stderr
    for mention in mentions:
        assert mention in finished.stderr, finished.stderr


@pytest.mark.parametrize(
    "name, text, mentions",
    [
        ("deep.json", '{"types": ' + "[" * 50_000 + "]" * 50_000 + "}", ["nests too deeply"]),
        ("nan.json", '{"types": {"a": {"parameters_schema": {"maximum": NaN}}}}', ["NaN"]),
        ("twice.json", '{"types": {"a": {"timeout": 5}, "a": {"timeout": 6}}}', ["'a'", "twice"]),
        ("twice-inside.json", '{"types": {"a": {"labels": {"k": "x", "k": "y"}}}}', ["'k'", "twice"]),
    ],
)
def test_a_json_file_with_a_mistake_is_refused_naming_it(tmp_path, name, text, mentions):
    (tmp_path / name).write_text(text)
    refused(apply(tmp_path / name), name, *mentions)


@needs_tomllib
@pytest.mark.parametrize(
    "text, mentions",
    [
        ("[types.a]\nx = " + "[" * 50_000 + "]" * 50_000 + "\n", ["nests too deeply"]),
        ("[types.a.parameters_schema]\nconst = 1979-05-27T07:32:00Z\n", ["types.a.parameters_schema.const", "date"]),
        ("[types.a.parameters_schema.properties.day]\nenum = [2026-01-01]\n", ["properties.day.enum[0]", "date"]),
        ("[types.a.parameters_schema]\nmaximum = inf\n", ["inf"]),
    ],
)
def test_a_toml_file_with_what_json_cannot_hold_is_refused_naming_it(tmp_path, text, mentions):
    (tmp_path / "types.toml").write_text(text)
    refused(apply(tmp_path / "types.toml"), "types.toml", *mentions)
