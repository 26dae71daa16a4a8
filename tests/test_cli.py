"""The shell worker and the command-line client, as real processes against a real server."""

import json
import signal
import time

import pytest

from support import RUN_PARAMETER, ServerProcess, finished, free_port, run_cli, running, submit, wait_until

# -- the shell worker


def test_commands_that_succeed_fail_die_and_report_progress(server, start_worker):
    start_worker("--type", "sh", "-c", "2", command=RUN_PARAMETER)
    ok = submit(server, "sh", {"run": "echo hello; echo oops >&2"})
    exit3 = submit(server, "sh", {"run": "echo partial; exit 3"}, max_attempts=1)
    killed = submit(server, "sh", {"run": "kill -KILL $$"}, max_attempts=1)
    percent = submit(server, "sh", {"run": "echo LAZYBOSS_PERCENT=40 >&2; echo LAZYBOSS_PERCENT=75 >&2"})
    job = finished(server, ok)
    assert job["status"] == "done"
    result = job["result"]
    assert (result["return_code"], result["signal"], result["stdout"], result["stderr"]) == (
        0,
        None,
        "hello\n",
        "oops\n",
    )
    assert result["duration_s"] >= 0
    job = finished(server, exit3)
    assert job["status"] == "failed" and job["error"]["return_code"] == 3 and job["error"]["stdout"] == "partial\n"
    job = finished(server, killed)
    assert job["status"] == "failed" and job["error"]["signal"] == "SIGKILL" and job["error"]["return_code"] is None
    assert finished(server, percent)["progress"] == 75
    log = server.client().request("GET", f"/jobs/{ok}/attempts/1/log").body.decode()
    assert sorted(log.splitlines()) == ["hello", "oops"]


def test_the_job_gets_its_parameters_and_environment(server, start_worker):
    start_worker("--type", "env", command=["sh", "-c", 'cat; echo "$LAZYBOSS_JOB_ID $LAZYBOSS_ATTEMPT $LAZYBOSS_TYPE"'])
    job_id = submit(server, "env", {"a": [1, 2]})
    assert finished(server, job_id)["result"]["stdout"] == f'{{"a":[1,2]}}\n{job_id} 1 env\n'


def test_a_megabyte_of_output_reaches_the_log_and_the_tail_the_result(server, start_worker):
    start_worker("--type", "big", command=["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo end"])
    job_id = submit(server, "big")
    job = finished(server, job_id, timeout=40)
    log = server.client().request("GET", f"/jobs/{job_id}/attempts/1/log").body.decode()
    assert len(log) == 1_000_000 + len("\nend\n") and log.endswith("x\nend\n")
    assert len(job["result"]["stdout"]) == 64 * 1024 and job["result"]["stdout"].endswith("end\n")


def test_json_result_parses_stdout_or_says_why_not(server, start_worker):
    start_worker("--type", "json", "--json-result", command=["sh", "-c", 'read line; echo "$line"'])
    good = submit(server, "json", {"answer": 42})
    assert finished(server, good)["result"] == {"answer": 42}
    start_worker("--type", "text", "--json-result", command=["echo", "not json"])
    bad = submit(server, "text", max_attempts=1)
    assert "stdout is not JSON" in finished(server, bad)["error"]["error"]


def test_a_command_past_its_time_limit_is_stopped(server, start_worker):
    start_worker("--type", "slow", "--grace", "1", command=["sleep", "30"])
    job_id = submit(server, "slow", timeout=1, max_attempts=1)
    started = time.monotonic()
    job = finished(server, job_id)
    assert time.monotonic() - started < 10
    assert job["status"] == "failed" and job["error"]["signal"] == "SIGTERM"
    assert job["error"]["stopped_because"] == "timeout"


def test_cancel_stops_the_running_command_and_the_worker_goes_on(server, start_worker, tmp_path):
    pids = tmp_path / "pids"
    start_worker("--type", "long", command=["sh", "-c", f"sleep 20 & echo $$ $! > {pids}; wait"])
    job_id = submit(server, "long")
    client = server.client()
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, what="the command to start")
    shell, sleeper = (int(pid) for pid in pids.read_text().split())
    cancelled_at = time.monotonic()
    assert client.request("POST", f"/jobs/{job_id}/cancel").json["status"] == "cancelled"
    wait_until(lambda: not running(shell) and not running(sleeper), timeout=8, what="the command to be killed")
    assert time.monotonic() - cancelled_at < 8
    following = submit(server, "long")
    wait_until(lambda: client.request("GET", f"/jobs/{following}").json["status"] == "processing", timeout=10)
    assert client.request("GET", f"/jobs/{job_id}").json["status"] == "cancelled"


def test_a_worker_killed_mid_job_loses_it_to_another(server, start_worker):
    first = start_worker("--type", "fragile", command=["sleep", "30"])
    job_id = submit(server, "fragile", timeout=1)
    client = server.client()
    wait_until(lambda: client.request("GET", f"/jobs/{job_id}").json["status"] == "processing", what="the claim")
    first.process.send_signal(signal.SIGKILL)
    first.process.wait(10)
    start_worker("--type", "fragile", command=["echo", "second"])
    job = finished(server, job_id, timeout=30)
    assert job["status"] == "done" and job["result"]["stdout"] == "second\n" and job["attempts"] == 2
    attempts = client.request("GET", f"/jobs/{job_id}/attempts").json
    assert attempts[0]["status"] == "expired"


def test_the_result_reaches_a_restarted_server(tmp_path, start_worker):
    db = tmp_path / "restart.sqlite"
    first = ServerProcess(db)
    port = first.port
    try:
        start_worker("--type", "r", command=["sh", "-c", "sleep 2; echo survived"], url=first.url)
        job_id = submit(first, "r")
        client = first.client()
        wait_until(lambda: client.request("GET", f"/jobs/{job_id}").json["status"] == "processing", what="claim")
    finally:
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(10)
    second = ServerProcess(db, port=port)
    try:
        job = finished(second, job_id)
        assert job["status"] == "done" and job["result"]["stdout"] == "survived\n"
    finally:
        second.stop()


def test_sigterm_lets_the_running_job_finish_then_exits_0(server, start_worker):
    worker = start_worker("--type", "t", command=["sh", "-c", "sleep 1.5; echo finished"])
    job_id = submit(server, "t")
    client = server.client()
    wait_until(lambda: client.request("GET", f"/jobs/{job_id}").json["status"] == "processing", what="the claim")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(20) == 0
    job = client.request("GET", f"/jobs/{job_id}").json
    assert job["status"] == "done" and job["result"]["stdout"] == "finished\n"
    later = submit(server, "t")  # the stopped worker is gone: nobody takes it
    assert client.request("GET", f"/jobs/{later}").json["status"] == "pending"
    assert any("claimed job" in line for line in worker.log) and any("finished job" in line for line in worker.log)


def test_a_worker_without_a_server_retries_until_it_comes(tmp_path, start_worker):
    port = free_port()
    worker = start_worker("--type", "late", command=["echo", "ok"], url=f"http://127.0.0.1:{port}")
    wait_until(lambda: any("cannot claim" in line for line in worker.log), what="a failed claim")
    server = ServerProcess(tmp_path / "late.sqlite", port=port)
    try:
        job = finished(server, submit(server, "late"))
        assert job["status"] == "done"
    finally:
        server.stop()


# -- the client commands


def test_submit_wait_exits_0_when_done_and_1_when_failed(server, start_worker):
    start_worker("--type", "sh", command=["sh", "-c", 'read p; test "$p" = \'{"ok":true}\''])
    env = {"LAZYBOSS_URL": server.url}
    done = run_cli("submit", "sh", '{"ok": true}', "--wait", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["return_code"] == 0  # the result alone, for jq
    assert done.stderr.strip().isdigit()  # the job's id
    failed = run_cli("submit", "sh", "-", "--wait", env=env, input='{"ok": false}')
    assert failed.returncode == 1 and '"status": "failed"' in failed.stdout


def test_client_commands_show_list_follow_cancel_retry_status(server, start_worker):
    env = {"LAZYBOSS_URL": server.url}
    waiting = run_cli("submit", "later", '{"n": 1}', "--delay", "60", "--key", "k1", env=env).stdout.strip()
    assert run_cli("submit", "later", '{"n": 1}', "--key", "k1", env=env).stdout.strip() == waiting
    listing = run_cli("jobs", "--status", "pending", env=env)
    assert listing.returncode == 0 and "later" in listing.stdout.splitlines()[1]
    assert '"n": 1' in run_cli("show", waiting, env=env).stdout
    assert "cancelled" in run_cli("cancel", waiting, env=env).stdout
    assert "pending" in run_cli("retry", waiting, env=env).stdout
    status = run_cli("status", env=env)
    assert status.returncode == 0 and "later" in status.stdout
    start_worker("--type", "echo", command=["sh", "-c", "echo line one; echo line two"])
    job_id = run_cli("submit", "echo", env=env).stdout.strip()
    followed = run_cli("follow", job_id, env=env)
    assert followed.returncode == 0 and followed.stdout == "line one\nline two\n"
    assert "done" in followed.stderr
    assert run_cli("show", "424242", env=env).returncode == 3


def test_types_pause_and_resume_from_the_command_line(server):
    env = {"LAZYBOSS_URL": server.url}
    submit(server, "mail")
    assert run_cli("pause", "mail", env=env).stdout.strip() == "mail: paused"
    table = run_cli("types", env=env).stdout.splitlines()
    assert table[0].split()[:2] == ["TYPE", "PAUSED"] and table[1].split()[:2] == ["mail", "paused"]
    assert server.client().request("POST", "/jobs/attempt").status == 204
    assert run_cli("resume", "mail", env=env).stdout.strip() == "mail: handed out"
    assert server.client().request("POST", "/jobs/attempt").status == 201


@pytest.mark.parametrize(
    "command",
    [["submit", "t"], ["jobs"], ["show", "1"], ["follow", "1"], ["cancel", "1"], ["retry", "1"], ["status"], ["types"]],
)
def test_every_client_command_against_a_stopped_server_exits_3_with_one_line(command):
    finished_run = run_cli(*command, "--server", f"http://127.0.0.1:{free_port()}")
    assert finished_run.returncode == 3
    assert len(finished_run.stderr.strip().splitlines()) == 1 and "Traceback" not in finished_run.stderr


def test_usage_errors_exit_2():
    assert run_cli("submit").returncode == 2
    assert run_cli("submit", "t", "{not json").returncode == 2
    assert run_cli("work", "--type", "t").returncode == 2
