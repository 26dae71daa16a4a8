"""--unix-socket PATH: alone or beside TCP, its file mode, local for open mode; the client and worker on unix:PATH."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

import lazyboss
from support import ROOT, Client, free_port, run_cli, start_process, wait_until


class UnixServer:
    """`python lazyboss.py --unix-socket PATH ARGS…` in a subprocess, waited for until the socket answers."""

    def __init__(self, db, path, *args):
        self.path = str(path)
        self.url = f"unix:{self.path}"
        self.process = start_process(
            [sys.executable, str(ROOT / "lazyboss.py"), "--db", str(db), "--unix-socket", self.path, *args],
            stdin=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_until(self.answers, timeout=15, what="the server on its UNIX socket")

    def answers(self):
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {self.process.stderr.read()}")
        try:
            return lazyboss.Client(self.url, timeout=1).request("GET", "/health")[0] == 200
        except lazyboss.Unreachable:
            return False

    def curl(self, *args):
        """curl over the socket: (status, body)."""
        done = subprocess.run(
            ["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", self.path, *args],
            capture_output=True,
            text=True,
            timeout=20,
        )
        body, _, status = done.stdout.rpartition("\n")
        return int(status), body

    def stop(self):
        """SIGTERM, and its log once it has exited."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        _, log = self.process.communicate(timeout=15)
        return log


@pytest.fixture
def start_unix(tmp_path):
    started = []

    def start(*args, db="jobs.sqlite", name="lazyboss.sock"):
        server = UnixServer(tmp_path / db, tmp_path / name, *args)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(10)


def test_alone_it_serves_the_api_on_the_socket_only_with_mode_0660(start_unix, tmp_path):
    server = start_unix()
    assert stat.S_ISSOCK(os.stat(server.path).st_mode)
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660
    status, body = server.curl("--json", '{"type": "t", "parameters": {"n": 1}}', "http://localhost/jobs")
    assert status == 202 and json.loads(body)["status"] == "pending"
    status, body = server.curl("-X", "POST", "-u", "w1:", "http://localhost/jobs/attempt")  # open mode: anyone
    assert status == 201 and json.loads(body)["assignee"] == "w1"
    log = server.stop()
    assert server.process.returncode == 0
    assert f"on unix:{server.path}\n" in log and "http://" not in log.split("serving")[1].splitlines()[0]
    assert not os.path.exists(server.path)  # removed at the orderly stop


def test_beside_tcp_both_serve_the_same_queue(start_unix):
    port = free_port()
    server = start_unix("--port", str(port))
    status, body = server.curl("--json", '{"type": "t"}', "http://localhost/jobs")
    job = json.loads(body)
    seen = Client(f"http://127.0.0.1:{port}").request("GET", f"/jobs/{job['id']}")
    assert status == 202 and seen.status == 200 and seen.json["id"] == job["id"]
    assert f"on unix:{server.path} and http://127.0.0.1:{port}" in server.stop()


def test_the_mode_is_a_setting_checked_at_start(start_unix, tmp_path):
    server = start_unix("--unix-socket-mode", "600")
    assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
    bad = run_cli(
        "--db", str(tmp_path / "x.sqlite"), "--unix-socket", str(tmp_path / "x.sock"), "--unix-socket-mode", "999"
    )
    assert bad.returncode == 2 and "LAZYBOSS_UNIX_SOCKET_MODE" in bad.stderr
    too_long = run_cli("--db", str(tmp_path / "x.sqlite"), "--unix-socket", "/" + "s" * 120)
    assert too_long.returncode == 2 and "at most 107 bytes" in too_long.stderr


def test_over_the_socket_open_mode_answers_only_for_localhost(start_unix):
    server = start_unix()
    assert server.curl("http://localhost/jobs")[0] == 200
    status, body = server.curl("-H", "Host: rebound.example", "http://localhost/jobs")
    assert status == 403 and json.loads(body)["error"] == "host"


def test_the_socket_counts_as_local_when_tcp_is_not(start_unix, tmp_path):
    db = tmp_path / "jobs.sqlite"
    assert run_cli("--db", str(db), "token", "create", "--role", "admin", "--name", "me").returncode == 0
    port = free_port()
    server = start_unix("--host", "0.0.0.0", "--port", str(port))
    assert run_cli("--db", str(db), "token", "revoke", "me").returncode == 0  # open mode from now on
    refused = Client(f"http://127.0.0.1:{port}").request("GET", "/jobs")
    assert refused.status == 401 and "no token exists" in refused.json["detail"]
    assert server.curl("http://localhost/jobs")[0] == 200


def test_a_dead_servers_socket_is_replaced_a_live_ones_or_another_file_is_not(start_unix, tmp_path):
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "lazyboss.sock"))
    stale.close()  # the file stays, nobody listens
    server = start_unix()
    second = run_cli("--db", str(tmp_path / "other.sqlite"), "--unix-socket", server.path)
    assert second.returncode == 1 and f"cannot listen on {server.path}: another server answers on it" in second.stderr
    assert server.answers()
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    refused = run_cli("--db", str(tmp_path / "other.sqlite"), "--unix-socket", str(plain))
    assert refused.returncode == 1 and "not a socket" in refused.stderr and plain.read_text() == "keep me"


def test_the_connection_guard_covers_the_socket(start_unix):
    server = start_unix("--header-timeout", "0.5")
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.settimeout(10)
    silent.connect(server.path)
    started = time.monotonic()
    assert silent.recv(1) == b""  # closed by the server: no headers within 0.5 s
    assert time.monotonic() - started < 5
    silent.close()


def test_the_client_the_command_line_and_the_worker_take_unix_urls(start_unix, tmp_path):
    server = start_unix()
    submitted = run_cli("submit", "echo", '{"word": "hi"}', "--server", server.url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    worker = start_process(
        [sys.executable, str(ROOT / "lazyboss.py"), "work", "--server", server.url, "--type", "echo"]
        + ["--json-result", "--", "sh", "-c", 'printf "{\\"url\\": \\"%s\\"}" "$LAZYBOSS_URL"'],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = lazyboss.Client(server.url)
        finished = client.wait(job_id, timeout=20)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=15)
    assert finished["status"] == "done" and finished["result"] == {"url": server.url}
    listed = run_cli("jobs", "--json", "--server", server.url)
    assert [job["id"] for job in json.loads(listed.stdout)] == [job_id]


def test_a_missing_socket_is_unreachable_in_one_line(tmp_path):
    missing = run_cli("jobs", "--server", f"unix:{tmp_path}/nobody.sock")
    assert missing.returncode == 3 and missing.stderr.count("\n") == 1
    assert "no such socket (is lazyboss running?)" in missing.stderr
    assert run_cli("jobs", "--server", "unix:").returncode == 2
