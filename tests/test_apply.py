"""`lazyboss apply FILE` and `lazyboss export`: type settings declared in a file, applied idempotently."""

import json
import sys

import pytest

from support import run_cli

TRANSCODE = {
    "timeout": 60,
    "max_attempts": 5,
    "backoff": {"base": 2},
    "retain": "1d",
    "labels": {"team": "media"},
    "parameters_schema": {"type": "object", "required": ["source"], "properties": {"h": {"enum": [480, 720]}}},
}
needs_tomllib = pytest.mark.skipif(sys.version_info < (3, 11), reason="reading TOML needs tomllib (Python 3.11+)")


def write(path, types):
    path.write_text(json.dumps({"types": types}))
    return str(path)


def apply(server, *args):
    return run_cli("apply", "--server", server.url, "--user", "ci:", *args)


def settings(server, name):
    answer = server.client().request("GET", f"/types/{name}")
    return answer.json["settings"] if answer.status == 200 else None


def versions(server, name):
    return server.client().request("GET", f"/types/{name}/versions").json["versions"]


def test_apply_creates_what_the_file_declares_and_prints_it(server, tmp_path):
    done = apply(server, write(tmp_path / "types.json", {"transcode": TRANSCODE, "mail": {}}))
    assert done.returncode == 0, done.stderr
    assert "+ transcode\n" in done.stdout and "    timeout: (default) -> 60.0\n" in done.stdout
    assert "+ mail\n" in done.stdout and "applied: 2 created, 0 changed, 0 removed, 0 unchanged" in done.stdout
    own = settings(server, "transcode")
    assert own["retain"] == 86400 and own["backoff"] == {"base": 2} and own["labels"] == {"team": "media"}
    assert settings(server, "mail") == {}
    assert versions(server, "transcode")[0]["changed_by"] == "ci"


def test_a_second_apply_changes_nothing_and_says_so(server, tmp_path):
    path = write(tmp_path / "types.json", {"transcode": TRANSCODE})
    apply(server, path)
    again = apply(server, path)
    assert again.returncode == 0 and again.stdout == f"nothing to change: the server matches {path} (1 types)\n"
    assert len(versions(server, "transcode")) == 1


def test_apply_changes_only_what_differs_and_drops_what_the_file_leaves_out(server, tmp_path):
    apply(server, write(tmp_path / "types.json", {"transcode": TRANSCODE}))
    changed = {key: value for key, value in TRANSCODE.items() if key != "labels"}
    done = apply(server, write(tmp_path / "types.json", {"transcode": {**changed, "timeout": 30}}))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:3] == [
        "~ transcode",
        "    timeout: 60.0 -> 30.0",
        '    labels: {"team":"media"} -> (default)',
    ]
    assert versions(server, "transcode")[-1]["changed"] == ["labels", "timeout"]
    assert "labels" not in settings(server, "transcode")


def test_dry_run_prints_the_difference_and_sends_nothing(server, tmp_path):
    done = apply(server, "--dry-run", write(tmp_path / "types.json", {"transcode": TRANSCODE}))
    assert done.returncode == 0 and "+ transcode" in done.stdout
    assert "dry run, nothing sent: 1 created" in done.stdout
    assert settings(server, "transcode") is None


def test_prune_removes_types_not_in_the_file_unless_they_have_jobs(server, tmp_path):
    admin = server.client()
    for name in ("old", "busy", "kept"):
        admin.request("PUT", f"/types/{name}", {"timeout": 5})
    admin.request("POST", "/jobs", {"type": "busy"})
    path = write(tmp_path / "types.json", {"kept": {"timeout": 5}})
    without = apply(server, path)
    assert "  old: not in the file, kept (--prune removes it)" in without.stdout
    assert settings(server, "old") == {"timeout": 5}
    pruned = apply(server, "--prune", path)
    assert pruned.returncode == 0, pruned.stderr
    assert "- old\n" in pruned.stdout and "  busy: not in the file, kept: it has 1 jobs" in pruned.stdout
    assert settings(server, "old") is None and settings(server, "busy") == {"timeout": 5}
    assert "1 removed, 1 unchanged" in pruned.stdout


def test_paused_changes_only_when_the_file_names_it(server, tmp_path):
    server.client().request("PUT", "/types/mail", {"timeout": 5, "paused": True})
    apply(server, write(tmp_path / "types.json", {"mail": {"timeout": 5}}))
    assert settings(server, "mail")["paused"] is True  # paused by hand in an incident: apply leaves it
    done = apply(server, write(tmp_path / "types.json", {"mail": {"timeout": 5, "paused": False}}))
    assert "    paused: true -> false" in done.stdout and "paused" not in settings(server, "mail")


def test_a_refusal_exits_non_zero_and_the_other_types_are_applied(server, tmp_path):
    path = write(tmp_path / "types.json", {"bad": {"parameters_schema": {"type": "strng"}}, "good": {"timeout": 9}})
    done = apply(server, path)
    assert done.returncode == 3
    assert "! bad: refused: parameters_schema is not a valid JSON Schema: at $.type" in done.stderr
    assert "1 refused" in done.stdout
    assert settings(server, "bad") is None and settings(server, "good") == {"timeout": 9}


@pytest.mark.parametrize(
    "content, says",
    [
        ('{"types": {"t": {"timout": 5}}}', "types.t: unknown field 'timout'"),
        ('{"types": {"t": {"max_attempts": 0}}}', "types.t: 'max_attempts' must be an integer from 1 to 1000"),
        ('{"types": {"bad name": {}}}', "'bad name' is not a type name"),
        ('{"kinds": {}}', 'the file holds one key, "types"'),
        ("{", "is not JSON"),
    ],
)
def test_a_file_with_a_mistake_changes_nothing_and_exits_2(server, tmp_path, content, says):
    (tmp_path / "types.json").write_text(content)
    done = apply(server, str(tmp_path / "types.json"))
    assert done.returncode == 2 and says in done.stderr
    assert server.client().request("GET", "/types").json == []


def test_apply_without_a_server_exits_3(tmp_path):
    done = run_cli("apply", "--server", "http://127.0.0.1:9", write(tmp_path / "t.json", {"t": {}}))
    assert done.returncode == 3 and "connection refused" in done.stderr


def configure_everything(server):
    admin = server.client()
    admin.request("PUT", "/types/transcode", {**TRANSCODE, "result_schema": {"required": ["url"]}})
    admin.request("PUT", "/types/mail.send", {"paused": True, "backoff": {"base": 1.5, "max": 60}, "claim_window": 30})
    admin.request("PUT", "/types/plain", {})
    admin.request("POST", "/jobs", {"type": "unconfigured"})


@pytest.mark.parametrize("kind", ["json", pytest.param("toml", marks=needs_tomllib)])
def test_export_round_trips_through_apply(server, tmp_path, kind):
    configure_everything(server)
    path = str(tmp_path / f"types.{kind}")
    exported = run_cli("export", "--server", server.url, path)
    assert exported.returncode == 0, exported.stderr
    again = apply(server, path)
    assert again.returncode == 0 and again.stdout.startswith("nothing to change"), again.stdout + again.stderr
    # Onto an empty server it makes the same configuration, and exports the same file.
    with open(path) as file:
        text = file.read()
    assert "unconfigured" not in text
    other = tmp_path / "other"
    other.mkdir()
    from support import ServerProcess

    fresh = ServerProcess(other / "fresh.sqlite")
    try:
        assert apply(fresh, path).returncode == 0
        for name in ("transcode", "mail.send", "plain"):
            assert settings(fresh, name) == settings(server, name)
        copy = run_cli("export", "--server", fresh.url, "--format", kind)
        assert copy.returncode == 0 and copy.stdout == text
    finally:
        fresh.stop()


def test_export_writes_json_to_stdout_and_toml_refuses_a_null(server):
    server.client().request("PUT", "/types/t", {"parameters_schema": {"enum": [None, 1]}})
    shown = run_cli("export", "--server", server.url)
    assert shown.returncode == 0 and json.loads(shown.stdout) == {
        "types": {"t": {"parameters_schema": {"enum": [None, 1]}}}
    }
    refused = run_cli("export", "--server", server.url, "--format", "toml")
    assert refused.returncode == 2 and "t.parameters_schema.enum[0] is null" in refused.stderr


@needs_tomllib
def test_a_hand_written_toml_file_applies(server, tmp_path):
    (tmp_path / "types.toml").write_text(
        '[types."mail.send"]\ntimeout = 20\nlabels = { team = "ops" }\n\n'
        '[types."mail.send".parameters_schema]\ntype = "object"\nrequired = ["to"]\n'
    )
    done = apply(server, str(tmp_path / "types.toml"))
    assert done.returncode == 0, done.stderr
    assert settings(server, "mail.send") == {
        "timeout": 20,
        "parameters_schema": {"type": "object", "required": ["to"]},
        "labels": {"team": "ops"},
    }
    refused = server.client().request("POST", "/jobs", {"type": "mail.send", "parameters": {}})
    assert refused.status == 422 and "'to' is a required property" in refused.json["detail"]


def test_apply_reads_json_from_stdin(server):
    done = run_cli("apply", "--server", server.url, "-", input='{"types": {"t": {"max_attempts": 2}}}')
    assert done.returncode == 0 and settings(server, "t") == {"max_attempts": 2}
