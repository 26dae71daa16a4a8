"""What a command or a request gives ambiguously or not at all: stdin closed where a command reads it,
a query parameter given twice, a purge prompt's count."""

import pytest

from support import run_cli


@pytest.mark.parametrize(
    "args",
    [("submit", "thumb", "-"), ("submit", "thumb", "--batch"), ("apply", "-")],
    ids=["submit -", "submit --batch", "apply -"],
)
def test_a_command_reading_a_closed_stdin_says_so_in_one_line_and_sends_nothing(server, args):
    refused = run_cli(*args, "--server", server.url, stdin_closed=True)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "stdin is closed" in refused.stderr.strip().splitlines()[-1]
    assert server.client().request("GET", "/stats").json["jobs"]["pending"] == 0
    assert server.client().request("GET", "/types").json == []


def test_a_query_parameter_given_twice_with_different_values_is_refused_and_changes_nothing(app, store):
    app.put_json("/schedules/minutely", {"type": "sync", "every": "1 minute"})
    refused = app.delete("/schedules/minutely?keep_pending=true&keep_pending=false", status=400).json
    assert refused["error"] == "bad_query" and "keep_pending" in refused["detail"]
    assert app.get("/schedules/minutely").json["name"] == "minutely"
    assert app.delete("/schedules/minutely?keep_pending=true&keep_pending=true").json["name"] == "minutely"


def test_the_purge_prompt_says_its_count_is_of_any_age_when_asked_for_old_jobs_only(server):
    server.client().request("POST", "/jobs", [{"type": "thumb"}, {"type": "thumb"}])
    purge = ("purge", "--type", "thumb", "--status", "pending", "--older-than", "7d", "--server", server.url)
    asked = run_cli(*purge, input="n\n")
    assert asked.returncode == 1
    assert "pending jobs of type thumb older than 7d (of 2 now, of any age)?" in asked.stderr
