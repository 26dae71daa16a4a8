"""Issue 16's controls at their edges, as a hostile client or a careless operator meets them: what a purge
does to those following a job, odd DATABASE_URLs, odd flags."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import lazyboss
from support import ROOT, EventStream, run_cli, wait_until

# -- a purged job's followers


def test_a_job_stream_ends_at_once_when_this_server_purges_the_job(start_live):
    live = start_live(heartbeat=30)  # the heartbeat's own look at the job is far off
    admin = live.client()
    job = admin.request("POST", "/jobs", {"type": "invoice", "hold": True}).json
    stream = EventStream(live.url, f"/jobs/{job['id']}", timeout=10)
    assert stream.next_event()["data"]["status"] == "held"
    assert admin.request("DELETE", "/jobs?type=invoice&status=held").json == {"deleted": 1}
    started = time.monotonic()
    assert stream.next_event() is None  # ended: asked again, it answers 404
    assert time.monotonic() - started < 2
    again = EventStream(live.url, f"/jobs/{job['id']}", {"Last-Event-ID": "1"})
    assert again.status == 404
    wait_until(lambda: admin.request("GET", "/stats").json["open_streams"] == 0, what="the stream's slot freed")


def test_a_job_stream_ends_when_another_process_purges_the_job(live, database):
    job = live.client().request("POST", "/jobs", {"type": "invoice"}).json
    stream = EventStream(live.url, f"/jobs/{job['id']}", timeout=10)
    assert stream.next_event()["data"]["status"] == "pending"
    other = lazyboss.Store(database)  # a second lazyboss on the database: this server hears nothing of it
    try:
        assert other.purge_jobs(["invoice"], ["pending"]) == 1
    finally:
        other.close()
    assert stream.next_event() is None  # within a heartbeat (0.5 s here)


def test_waiting_for_a_released_job_that_is_purged_ends_with_not_found(live):
    client = lazyboss.Client(live.url)
    job = client.submit("invoice", {}, hold=True)
    client.release(job["id"])
    outcome = []

    def wait():
        try:
            client.wait(job["id"], timeout=20)
        except lazyboss.NotFound as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: live.client().request("GET", "/stats").json["open_streams"] == 1, what="the follower")
    assert client.purge("invoice", "pending") == 1
    waiter.join(10)
    assert not waiter.is_alive() and outcome, "Client.wait followed a deleted job for ever"


def test_release_wait_on_the_command_line_ends_when_the_job_is_purged(server):
    job = server.client().request("POST", "/jobs", {"type": "invoice", "hold": True}).json
    waiting = subprocess.Popen(
        [sys.executable, str(ROOT / "lazyboss.py"), "release", job["id"], "--wait", "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: server.client().request("GET", f"/jobs/{job['id']}").json["status"] == "pending")
        time.sleep(0.3)  # following its stream now
        server.client().request("DELETE", "/jobs?type=invoice&status=pending")
        _, stderr = waiting.communicate(timeout=20)
    finally:
        waiting.kill()
    assert waiting.returncode == 3 and f"no job {job['id']}" in stderr


# -- DATABASE_URL and --db


def without_database_settings():
    return {key: value for key, value in os.environ.items() if key not in ("LAZYBOSS_DB", "DATABASE_URL")}


def token_list(cwd, *args, env):
    return subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), *args, "token", "list"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**without_database_settings(), **env},
        timeout=30,
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:lazy:hunter2@db.example/jobs",  # the two slashes forgotten
        "postgres:lazy:hunter2@db.example",
        "postgresql+psycopg://lazy:hunter2@db.example/jobs",  # SQLAlchemy's dialect+driver
        "mysql:root:hunter2@localhost/jobs",
    ],
)
def test_a_database_servers_url_without_its_slashes_is_refused_without_its_password(tmp_path, url):
    for refused in (token_list(tmp_path, env={"DATABASE_URL": url}), token_list(tmp_path, "--db", url, env={})):
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "hunter2" not in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_nul_in_a_database_url_is_refused_in_one_line(tmp_path):
    refused = token_list(tmp_path, env={"DATABASE_URL": f"sqlite:///{tmp_path}/a%00b.sqlite"})
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "NUL" in refused.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("how", ["url", "flag"])
def test_a_file_name_that_is_not_utf_8_is_made_and_opened_again(tmp_path, how):
    name = b"caf\xc3\xa9-\xff.sqlite"
    args, env = ([], {"DATABASE_URL": f"sqlite:///{tmp_path}/caf%C3%A9-%FF.sqlite"})
    if how == "flag":
        args, env = ["--db", os.fsdecode(os.fsencode(tmp_path) + b"/" + name)], {}
    for _ in ("made", "opened again"):
        done = token_list(tmp_path, *args, env=env)
        assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(os.fsencode(tmp_path))) == [name]


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_an_empty_db_setting_is_refused_at_start(tmp_path, how):
    args, env = (["--db", ""], {}) if how == "flag" else ([], {"LAZYBOSS_DB": " "})
    refused = token_list(tmp_path, *args, env=env)
    assert refused.returncode == 2 and "LAZYBOSS_DB" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert list(tmp_path.iterdir()) == []


# -- lazyboss purge


def test_purge_asks_about_the_jobs_it_would_delete_when_types_are_listed_with_commas(server):
    server.client().request("POST", "/jobs", [{"type": "thumb"}, {"type": "resize"}, {"type": "resize"}])
    asked = run_cli("purge", "--type", "thumb,resize", "--status", "pending", "--server", server.url, input="n\n")
    assert asked.returncode == 1
    assert "pending jobs of type thumb or resize (of 3 now)?" in asked.stderr
    assert server.client().request("GET", "/stats").json["jobs"]["pending"] == 3


@pytest.mark.parametrize("stdin", ["closed", "not text"])
def test_purge_without_an_answer_it_can_read_deletes_nothing_in_one_line(server, stdin):
    server.client().request("POST", "/jobs", {"type": "thumb"})
    asked = subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), "purge", "--type", "thumb", "--status", "pending"],
        input=None if stdin == "closed" else b"\xff\xfe\n",
        preexec_fn=(lambda: os.close(0)) if stdin == "closed" else None,
        capture_output=True,
        env={**os.environ, "LAZYBOSS_URL": server.url},
        timeout=30,
    )
    assert asked.returncode == 1 and b"Traceback" not in asked.stderr
    assert asked.stderr.endswith(b"lazyboss: nothing deleted\n")
    assert server.client().request("GET", "/stats").json["jobs"]["pending"] == 1


# -- the UNIX socket's mode


@pytest.mark.parametrize("mode", ["000", "400", "444", "070"])
def test_a_socket_mode_its_owner_could_not_connect_through_is_refused_at_start(tmp_path, mode):
    refused = run_cli(
        "--db", str(tmp_path / "x.sqlite"), "--unix-socket", str(tmp_path / "x.sock"), "--unix-socket-mode", mode
    )
    assert refused.returncode == 2 and "LAZYBOSS_UNIX_SOCKET_MODE" in refused.stderr
    assert "owner" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


# -- a UNIX socket from systemd (ListenStream=/run/lazyboss.sock)


# What systemd does before it starts the service: the socket as descriptor 3, and LISTEN_PID and LISTEN_FDS.
ACTIVATED = """import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"""


def activated_on_unix_socket(tmp_path, *args):
    """`lazyboss.py` started as systemd's socket activation starts it, on a UNIX socket systemd made."""
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    with listener:
        process = subprocess.Popen(
            [sys.executable, "-c", ACTIVATED, str(listener.fileno())]
            + [str(ROOT / "lazyboss.py"), "--db", str(tmp_path / "jobs.sqlite"), *args],
            pass_fds=(listener.fileno(),),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return process, path


def test_a_unix_socket_from_systemd_is_served_as_local_and_left_to_systemd(tmp_path):
    process, path = activated_on_unix_socket(tmp_path)
    try:
        client = lazyboss.Client(f"unix:{path}")
        job = wait_until(lambda: process.poll() is None and submitted(client), what="a job submitted over the socket")
        assert client.get(job["id"])["status"] == "pending"  # open mode: the socket is local
    finally:
        process.terminate()
        log, _ = process.communicate(timeout=15)
    assert process.returncode == 0, log
    assert f"on unix:{path}" in log
    assert path.exists()  # systemd made it, and listens on it again for the next start


def submitted(client):
    try:
        return client.submit("report", {})
    except lazyboss.Unreachable:
        return None


@pytest.mark.parametrize("name", ["file:jobs.sqlite", ":memory:", "file:jobs.sqlite?mode=memory"])
def test_a_db_path_is_a_file_name_for_every_connection_never_sqlites_uri(tmp_path, name):
    for how in ({"DATABASE_URL": name}, {"LAZYBOSS_DB": name}):
        made = subprocess.run(
            [sys.executable, str(ROOT / "lazyboss.py"), "token", "create", "--name", "me", "--role", "admin"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**without_database_settings(), **how},
            timeout=30,
        )
        assert made.returncode == 0, made.stderr
        listed = token_list(tmp_path, env=how)  # the file the first connection made is the one opened again
        assert listed.returncode == 0 and "me" in listed.stdout, listed.stderr
        (tmp_path / name).unlink()
        assert sorted(path.name for path in tmp_path.iterdir() if not path.name.endswith(("-wal", "-shm"))) == []


def test_the_unix_scheme_is_read_whatever_its_case_as_http_is(tmp_path):
    for url in ("UNIX:/run/lazyboss.sock", "Unix:/run/lazyboss.sock"):
        refused = run_cli("jobs", "--server", url.replace("/run", str(tmp_path)))
        assert refused.returncode == 3 and "no such socket" in refused.stderr, refused.stderr


@pytest.mark.parametrize(
    "url",
    ["postgresql://me:hunter2@[::1/jobs", "postgresql://me:hunter2@db:99999/jobs", "postgres://me:hunter2@db:x/j"],
)
def test_a_postgresql_url_that_cannot_be_read_is_refused_in_one_line_without_its_password(tmp_path, url):
    for refused in (token_list(tmp_path, env={"DATABASE_URL": url}), token_list(tmp_path, "--db", url, env={})):
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "hunter2" not in refused.stderr
    assert list(tmp_path.iterdir()) == []
