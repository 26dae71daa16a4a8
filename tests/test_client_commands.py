"""The client commands: Ctrl-C, following a retried job, TLS timeouts, help and usage errors."""

import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import lazyboss
from support import ROOT, free_port, run_cli, start_process, submit, wait_until


def streams_open(server):
    return server.client().request("GET", "/stats").json["open_streams"]


@pytest.mark.parametrize("command", [["follow"], ["submit", "--wait", "t"]])
def test_ctrl_c_exits_130_without_a_traceback(server, command):
    if command[0] == "follow":
        command = ["follow", submit(server, "t")]
    process = start_process(
        [sys.executable, str(ROOT / "lazyboss.py"), *command, "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: streams_open(server), what="the command to follow the job")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    assert process.returncode == 130 and "Traceback" not in stderr


def test_follow_goes_past_an_undone_failure_to_the_real_end(server):
    client = server.client()
    job_id = submit(server, "t", max_attempts=1)

    def attempt(outcome, body, text):
        claimed = client.request("POST", "/jobs/attempt").json
        path = f"/jobs/{job_id}/attempts/{claimed['attempt']}"
        client.request("PUT", f"{path}/progress", f"data: {text}\n\n", {"Content-Type": "text/event-stream"})
        client.request("PUT", f"{path}/{outcome}", body)

    attempt("error", {"reason": "first"}, "one")  # the job fails for good
    client.request("POST", f"/jobs/{job_id}/retry")
    follow = start_process(
        [sys.executable, str(ROOT / "lazyboss.py"), "follow", job_id, "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: streams_open(server), what="follow to start")
    attempt("result", {"ok": True}, "two")
    stdout, stderr = follow.communicate(timeout=20)
    assert follow.returncode == 0, stderr
    assert stdout == "onetwo"
    assert "failed" in stderr and stderr.strip().splitlines()[-1].endswith("done: done")


def test_https_against_a_plain_server_gives_up_after_the_connect_timeout():
    listener = socket.socket()  # accepts, then never answers: like an HTTP server that waits for a request line
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    try:
        started = time.monotonic()
        run = run_cli("jobs", "--server", f"https://127.0.0.1:{listener.getsockname()[1]}")
        took = time.monotonic() - started
    finally:
        listener.close()
    assert run.returncode == 3 and took < 10
    assert len(run.stderr.strip().splitlines()) == 1 and "TLS" in run.stderr


def option_actions(parser):
    """(command, action) for every option and argument of every sub-command."""
    for action in parser._actions:
        if isinstance(action, lazyboss.argparse._SubParsersAction):
            for name, sub in action.choices.items():
                for inner in sub._actions:
                    if isinstance(inner, lazyboss.argparse._SubParsersAction):
                        yield from ((f"{name} {n}", a) for n, s in inner.choices.items() for a in s._actions)
                    else:
                        yield name, inner
        else:
            yield "", action


def test_every_option_has_help_with_its_default():
    for command, action in option_actions(lazyboss._build_parser()):
        if isinstance(action, (lazyboss.argparse._HelpAction, lazyboss.argparse._SubParsersAction)):
            continue
        assert action.help, f"{command} {action.dest} has no help"
        takes_value = action.option_strings and action.nargs != 0 and not action.required
        if takes_value and action.dest != "version":
            assert "default" in action.help, f"{command} {action.option_strings[0]} does not tell its default"


@pytest.mark.parametrize(
    "args, usage",
    [
        (["work", "--type", "t"], "usage: lazyboss work"),
        (["work", "--type", "t", "-c", "0", "--", "true"], "usage: lazyboss work"),
        (["submit", "t", "{not json"], "usage: lazyboss submit"),
        (["jobs", "--limit", "0"], "usage: lazyboss jobs"),
        (["jobs", "--server", "ftp://x"], "usage: lazyboss jobs"),
    ],
)
def test_a_usage_error_shows_the_usage_of_its_command(args, usage):
    run = run_cli(*args, "--server", f"http://127.0.0.1:{free_port()}") if "--server" not in args else run_cli(*args)
    assert run.returncode == 2 and run.stderr.startswith(usage) and "Traceback" not in run.stderr


def test_a_client_asking_for_admin_work_is_told_it_needs_an_admin_token(server, tmp_path):
    secret = run_cli(
        "--db", str(tmp_path / "cli.sqlite"), "token", "create", "--role", "client", "--name", "app"
    ).stdout
    answer = server.client(token=secret.strip()).request("GET", "/types")
    assert answer.status == 403 and "needs an admin token" in answer.json["detail"]
