"""The shell worker never hangs, leaks or lies: stops, output, back-off, credentials, orphans, start-up."""

import re
import signal
import time

import pytest

import lazyboss
from support import (
    ServerProcess,
    finished,
    job_status,
    run_cli,
    running,
    submit,
    wait_until,
)


def pids_in(path):
    """The process ids a command wrote to `path`, once it has written all of them."""
    return wait_until(lambda: path.exists() and path.read_text().endswith("\n") and path.read_text().split(), 10)


@pytest.mark.parametrize(
    "data", ["", "x", "\n", "\r", "\r\n", "a\rb\nc\r\nd", "\r\r\n\n", "ünï\ufffd\x00", "tail\r", "y\n" * 1000]
)
def test_a_progress_events_size_is_known_without_building_it(data):
    assert lazyboss._progress_size(12, "log_chunk", data) == len(
        lazyboss._progress_event(12, "log_chunk", data).encode()
    )


def log_of(server, job_id, attempt=1):
    return server.client().request("GET", f"/jobs/{job_id}/attempts/{attempt}/log").body.decode()


# -- cancel, timeout and shutdown always end the command


def test_cancel_kills_a_command_and_its_children_that_ignore_sigterm(server, start_worker, tmp_path):
    pids = tmp_path / "pids"
    stubborn = f"trap '' TERM; sleep 300 & echo $$ $! > {pids}; wait; wait"
    worker = start_worker("--type", "t", command=["sh", "-c", stubborn])
    job_id = submit(server, "t")
    shell, child = (int(pid) for pid in pids_in(pids))
    cancelled_at = time.monotonic()
    assert server.client().request("POST", f"/jobs/{job_id}/cancel").status == 200
    # The next heartbeat (2 s) hears of it, SIGTERM is ignored, SIGKILL follows 3 s later: once.
    wait_until(lambda: not running(shell) and not running(child), timeout=15, what="the command to be killed")
    assert time.monotonic() - cancelled_at < 8
    assert len(worker.logged("stopping its work")) == 1
    wait_until(lambda: worker.logged("finished job"), what="the finished line")
    assert "killed by SIGKILL" in worker.logged("finished job")[0] and "(cancelled)" in worker.logged("finished job")[0]
    pids.unlink()
    following = submit(server, "t")  # the slot is free again
    wait_until(lambda: job_status(server, following) == "processing", what="the next job to be claimed")
    assert job_status(server, job_id) == "cancelled"


def test_a_timed_out_command_that_ignores_sigterm_is_killed_after_grace(server, start_worker, tmp_path):
    pids = tmp_path / "pids"
    start_worker("--type", "t", "--grace", "1", command=["sh", "-c", f"trap '' TERM; echo $$ > {pids}; sleep 300"])
    job_id = submit(server, "t", timeout=1, max_attempts=1)
    (shell,) = (int(pid) for pid in pids_in(pids))
    job = finished(server, job_id)
    assert job["status"] == "failed"
    assert (job["error"]["signal"], job["error"]["stopped_because"]) == ("SIGKILL", "timeout")
    assert 1.5 < job["error"]["duration_s"] < 5
    assert not running(shell)


def test_sigint_stops_claiming_and_a_second_one_kills_at_once(server, start_worker, tmp_path):
    pids = tmp_path / "pids"
    worker = start_worker("--type", "t", command=["sh", "-c", f"echo $$ > {pids}; exec sleep 300"])
    job_id = submit(server, "t", max_attempts=1)
    (command,) = (int(pid) for pid in pids_in(pids))
    worker.process.send_signal(signal.SIGINT)
    wait_until(lambda: worker.logged("stopping: no more claims"), what="the first signal to be taken")
    assert running(command)  # it has --grace (30 s) to finish
    worker.process.send_signal(signal.SIGINT)
    assert worker.process.wait(10) == 130
    assert not running(command)
    worker.ended.wait(5)
    assert not worker.logged("Traceback")
    job = finished(server, job_id)
    assert job["error"]["signal"] == "SIGKILL" and job["error"]["stopped_because"] == "shutdown"


# -- output can never wedge the worker; the log is the output


def test_the_log_is_the_output_byte_for_byte(server, start_worker, tmp_path):
    output = (
        b"downloading 10%\r20%\rdone\n"
        + b"windows\r\nline ends\r\n\r\n"
        + b"x" * 200_000  # a long line, over a progress request's 256 KiB once encoded
        + b"\nbad utf-8: \xff\xfe, cut: \xe2\x82 and a nul: \x00 and \xe2\x82\xac\n"
        + "ünïcödé ✓\n".encode()
        + b"\n" * 3000  # empty lines cost more on the wire than they weigh
        + b"no newline at the end\r"
    )
    (tmp_path / "output").write_bytes(output)
    start_worker("--type", "t", command=["cat", str(tmp_path / "output")])
    job_id = submit(server, "t")
    job = finished(server, job_id)
    expected = output.decode("utf-8", "replace")
    assert log_of(server, job_id) == expected
    assert job["result"]["stdout"] == expected[-len(job["result"]["stdout"]) :]
    assert job["result"]["stdout"].endswith("\n" * 3000 + "no newline at the end\r")


def test_output_larger_than_the_body_limit_arrives_whole(tmp_path, start_worker):
    server = ServerProcess(tmp_path / "small.sqlite", "--max-body", "65536")
    try:
        worker = start_worker("--type", "t", command=["seq", "1", "300000"], url=server.url)
        job_id = submit(server, "t")
        job = finished(server, job_id, timeout=40)
        assert job["status"] == "done"
        assert log_of(server, job_id) == "".join(f"{n}\n" for n in range(1, 300001))
        assert len(worker.logged("(413)")) <= 3  # the batch size is learnt once, not retried blindly
    finally:
        server.stop()


def memory_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def test_endless_output_keeps_the_worker_small_and_stoppable(tmp_path, start_worker):
    server = ServerProcess(tmp_path / "small.sqlite", "--max-body", "65536")
    try:
        # A quiet job first: the worker at rest, with all it imports to run a command, is what the
        # endless one is measured against (run as a script it is ~50 MB, and grows with the source).
        command = ["sh", "-c", 'read -r endless; [ "$endless" != true ] || exec yes']
        worker = start_worker("--type", "t", command=command, url=server.url)
        assert finished(server, submit(server, "t"))["status"] == "done"
        at_rest = memory_kib(worker.process.pid)
        job_id = submit(server, "t", True)
        wait_until(lambda: job_status(server, job_id) == "processing", what="the claim")
        peak = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            peak = max(peak, memory_kib(worker.process.pid))
            time.sleep(0.1)
        # Output is held up to _BACKLOG characters, and a piece of it exists in a few forms at once (the
        # queued pieces, their join, the rest after a cut, the encoded request): measured 6-7 MB above rest,
        # 2-3 MB of it Python objects (tracemalloc), the rest heap pages malloc keeps. Sixteen backlogs bound
        # that, and catch output held per line or without end (a megabyte of short lines once cost 70 MB).
        assert peak - at_rest < 16 * lazyboss._BACKLOG // 1024, f"the worker grew from {at_rest} to {peak} KiB"
        assert len(worker.logged("(413)")) <= 3
        worker.process.send_signal(signal.SIGTERM)  # yes never ends: it would be stopped after --grace
        wait_until(lambda: worker.logged("stopping: no more claims"), what="the first signal to be taken")
        worker.process.send_signal(signal.SIGTERM)  # a second signal stops it at once
        assert worker.process.wait(15) == 0
        assert log_of(server, job_id).startswith("y\ny\n")
    finally:
        server.stop()


def test_output_while_the_server_is_down_is_dropped_with_a_marker(tmp_path, start_worker):
    db, flag = tmp_path / "restart.sqlite", tmp_path / "written"
    server = ServerProcess(db)
    port = server.port
    script = (
        f"while [ ! -e {flag}.go ]; do sleep 0.05; done; head -c 3000000 /dev/zero | tr '\\0' x; echo; touch {flag}; "
        f"while [ ! -e {flag}.end ]; do sleep 0.05; done; echo end"
    )
    worker = start_worker("--type", "t", command=["sh", "-c", script], url=server.url)
    job_id = submit(server, "t")
    wait_until(lambda: job_status(server, job_id) == "processing", what="the claim")
    server.stop()
    (tmp_path / "written.go").touch()
    wait_until(lambda: worker.logged("not sent"), what="a progress report to fail")
    wait_until(flag.exists, what="the output to be written")  # and read while nothing gets through
    server = ServerProcess(db, port=port)
    try:
        # What the worker held (its backlog) arrives; then new output finds room again.
        wait_until(lambda: len(log_of(server, job_id)) >= 1 << 20, timeout=20, what="the backlog to arrive")
        (tmp_path / "written.end").touch()
        job = finished(server, job_id, timeout=40)
        assert job["status"] == "done"
        log = log_of(server, job_id)
        assert re.search(r"x\[… \d+ bytes dropped\]\n?end\n$", log) and len(log) < 2_000_000
    finally:
        server.stop()


def test_a_server_down_at_the_end_gets_the_result_later_and_few_log_lines(tmp_path, start_worker):
    db = tmp_path / "restart.sqlite"
    server = ServerProcess(db)
    port = server.port
    worker = start_worker("--type", "t", command=["sh", "-c", "sleep 1; echo output; echo more >&2"], url=server.url)
    job_id = submit(server, "t")
    wait_until(lambda: job_status(server, job_id) == "processing", what="the claim")
    server.stop()
    wait_until(lambda: worker.logged("finished job"), what="the command to end")
    time.sleep(4)
    assert len(worker.log) < 20, "".join(worker.log)  # a line per back-off step, not a flood
    server = ServerProcess(db, port=port)
    try:
        job = finished(server, job_id, timeout=20)
        assert job["status"] == "done" and job["result"]["stdout"] == "output\n"
        assert sorted(log_of(server, job_id).splitlines()) == ["more", "output"]
    finally:
        server.stop()


# -- credentials, orphans, commands that cannot start


def test_the_command_never_sees_the_worker_credentials(server, start_worker, tmp_path):
    secret = run_cli("--db", str(tmp_path / "cli.sqlite"), "token", "create", "--role", "admin", "--name", "w1").stdout
    secret = secret.strip()
    admin = {"Authorization": f"Bearer {secret}"}
    env = {"LAZYBOSS_TOKEN": secret, "MY_COPY": f"token={secret}", "HARMLESS": "kept"}
    start_worker("--type", "env", command=["env"], env=env)
    response = server.client().request("POST", "/jobs", {"type": "env"}, headers=admin)
    job = wait_until(
        lambda: (
            (j := server.client(token=secret).request("GET", f"/jobs/{response.json['id']}").json)["status"] == "done"
            and j
        )
    )
    environment = job["result"]["stdout"]
    assert secret not in environment and "LAZYBOSS_TOKEN" not in environment
    assert "HARMLESS=kept" in environment and f"LAZYBOSS_JOB_ID={job['id']}" in environment

    token_file = tmp_path / "token"
    token_file.write_text(secret + "\n")
    start_worker("--type", "file", "--token-file", str(token_file), command=["sh", "-c", "echo $LAZYBOSS_TOKEN_FILE"])
    response = server.client(token=secret).request("POST", "/jobs", {"type": "file"})
    wait_until(
        lambda: server.client(token=secret).request("GET", f"/jobs/{response.json['id']}").json["status"] == "done"
    )
    assert run_cli("jobs", "--server", server.url, "--token-file", str(tmp_path / "missing")).returncode == 2


def test_a_killed_worker_leaves_no_process_behind(server, start_worker, tmp_path):
    pids = tmp_path / "pids"
    worker = start_worker("--type", "t", command=["sh", "-c", f"sleep 300 & echo $$ $! > {pids}; wait"])
    submit(server, "t")
    shell, child = (int(pid) for pid in pids_in(pids))
    worker.process.kill()
    worker.process.wait(5)
    wait_until(lambda: not running(shell) and not running(child), timeout=10, what="the command to die too")


def test_a_command_that_cannot_start(server, start_worker, tmp_path):
    missing = run_cli("work", "--server", server.url, "--type", "t", "--", "/no/such/cmd")
    assert missing.returncode == 2 and "/no/such/cmd" in missing.stderr and "Traceback" not in missing.stderr
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    worker = start_worker("--type", "t", command=[str(script)])
    wait_until(lambda: worker.logged("working on"), what="the worker to start")
    script.unlink()
    job = finished(server, submit(server, "t", max_attempts=1))
    assert job["status"] == "failed" and job["error"]["stopped_because"] == "cannot_start"
    assert "cannot run" in job["error"]["error"]
    wait_until(lambda: worker.logged("cannot run"), what="the log line")
    assert "finished job" in worker.logged("cannot run")[0]


def test_progress_is_a_float_from_the_shell_worker_and_over_http(server, start_worker):
    start_worker("--type", "p", command=["sh", "-c", "echo LAZYBOSS_PERCENT=50 >&2; sleep 30"])
    job_id = submit(server, "p")
    client = server.client()
    wait_until(lambda: client.request("GET", f"/jobs/{job_id}").json["progress"] == 50, what="the percentage")
    assert b'"progress":50.0' in client.request("GET", f"/jobs/{job_id}").body
    other = submit(server, "q")
    claimed = client.request("POST", "/jobs/attempt?type=q").json
    client.request(
        "PUT",
        f"/jobs/{other}/attempts/{claimed['attempt']}/progress",
        "event: percent\ndata: 25\n\n",
        {"Content-Type": "text/event-stream"},
    )
    assert b'"progress":25.0' in client.request("GET", f"/jobs/{other}").body
