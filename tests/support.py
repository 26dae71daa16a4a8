"""Helpers for tests that cross the wire: an HTTP client, a server process, bounded waiting."""

import atexit
import base64
import http.client
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every lazyboss process the tests start: one a failed test left running is killed when pytest exits.
_STARTED = []
atexit.register(lambda: [process.kill() for process in _STARTED if process.poll() is None])


def start_process(command, **options):
    """subprocess.Popen, and the process is killed when pytest exits if a failed test left it running."""
    process = subprocess.Popen(command, **options)
    _STARTED.append(process)
    return process


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)


class Client:
    """A keep-alive HTTP client for one thread, speaking JSON."""

    def __init__(self, url, user=None, token=None, timeout=10):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.auth = {}
        if user is not None:
            self.auth["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
        if token is not None:
            self.auth["Authorization"] = "Bearer " + token

    def request(self, method, path, body=None, headers=None):
        headers = {**self.auth, **(headers or {})}
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        try:
            self.connection.request(method, path, body=body, headers=headers)
            answer = self.connection.getresponse()
        except (ConnectionError, http.client.HTTPException):
            self.connection.close()
            raise
        return Response(answer.status, answer.headers, answer.read())

    def close(self):
        self.connection.close()


def run_cli(*args, env=None, input=None, timeout=30, stdin_closed=False):
    """`python lazyboss.py ARGS…` to its end (started with its stdin closed if told): the finished
    process, output as text."""
    return subprocess.run(
        [sys.executable, str(ROOT / "lazyboss.py"), *args],
        capture_output=True,
        text=True,
        input=input,
        preexec_fn=(lambda: os.close(0)) if stdin_closed else None,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def assert_one_line_error(finished, *mentions, status=1):
    """A command that refused to run: exit `status` and one line on stderr naming each of `mentions`."""
    lines = finished.stderr.strip().splitlines()
    assert finished.returncode == status, finished.stderr
    assert len(lines) == 1 and lines[0].startswith("lazyboss: "), finished.stderr
    for mention in mentions:
        assert mention in lines[0]


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def read_all(sock):
    """Every byte the server sends on `sock` until it closes; `sock` is closed then."""
    received = b""
    while data := sock.recv(65536):
        received += data
    sock.close()
    return received


def rows(store, sql, *args):
    """The rows (tuples) of a query of the store's database, on either engine: what a test checks directly."""
    return [tuple(row) for row in store.db.execute(sql, args).fetchall()]


def wait_until(predicate, timeout=10.0, interval=0.02, what="the condition"):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class HeldWrite:
    """A write that holds the store's write lock until `release`: writers arriving meanwhile queue up behind it."""

    def __init__(self, store, write):
        self.store, self.entered, self.released = store, threading.Event(), threading.Event()

        def hold():
            with store.transaction() as db:
                write(db)
                self.entered.set()
                assert self.released.wait(20)

        self.pool = ThreadPoolExecutor(8)
        self.holder = self.pool.submit(hold)
        assert self.entered.wait(10)

    def queue(self, *calls):
        """Start each call on its own thread; return their futures once all wait for the write lock."""
        futures = [self.pool.submit(call) for call in calls]
        wait_until(lambda: self.store._queued == len(calls), what="the writers to queue")
        return futures

    def release(self):
        self.released.set()
        self.holder.result(10)
        self.pool.shutdown()


@contextmanager
def running_worker(worker):
    """A `lazyboss.Worker` running on a thread for the block; stopped as SIGTERM does and joined at its end."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        wait_until(lambda: worker._engine is not None, what="the worker to start")
        worker.stop()
        thread.join(20)


class ServerProcess:
    """`python lazyboss.py` in a subprocess on a free port, its log lines collected."""

    def __init__(self, db, *args, env=None, port=None):
        environment = {**os.environ, **(env or {})}
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = start_process(
            [sys.executable, str(ROOT / "lazyboss.py"), "--db", str(db), "--port", str(self.port), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
        )
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()
        try:
            wait_until(self._answers, timeout=15, what=f"the server on port {self.port}")
        except BaseException:  # a server that never answered (or the test's time ran out) is not left behind
            self.process.kill()
            raise

    def _answers(self):
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {''.join(self.log)}")
        try:
            Client(self.url, timeout=1).request("GET", "/health")  # 503 too: a server on a full disk says so
            return True
        except OSError:
            return False

    def _read(self):
        for line in self.process.stdout:
            self.log.append(line)

    def client(self, **kwargs):
        return Client(self.url, **kwargs)

    def stop(self, timeout=10):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout)


class EventStream:
    """A text/event-stream request read event by event, every read bounded by `timeout`."""

    def __init__(self, url, path, headers=None, timeout=5):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.connection.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.socket = self.connection.sock  # the response keeps using it after the connection lets go
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.comments = []

    def next_event(self):
        """The next event as {"id", "data"} (data parsed as JSON), or None when the stream ends."""
        event = {}
        while True:
            line = self.response.readline().decode()
            if not line:
                return None
            line = line.rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line)
            elif line:
                name, _, value = line.partition(": ")
                event[name] = json.loads(value) if name == "data" else value
            elif "data" in event:
                return event
            else:
                event = {}  # a block without data (such as `retry:`) dispatches nothing

    def close(self):
        """Hang up, as a client that goes away would."""
        self.socket.shutdown(socket.SHUT_RDWR)
        self.response.close()
        self.connection.close()


def open_long_poll(live, query="wait=30", lose_it_on_claim=None):
    """A raw connection waiting in `POST /jobs/attempt?QUERY` on a live server, as a worker that may vanish.

    With `lose_it_on_claim` (pytest's monkeypatch) the worker hangs up right after the server has
    committed its claim, before the answer is written.
    """
    sock = socket.create_connection(("127.0.0.1", live.server.port), timeout=10)
    if lose_it_on_claim is not None:
        claim = live.store.claim_jobs

        def claim_then_lose_the_worker(*args):
            claimed = claim(*args)
            peer = sock.getsockname()
            sock.close()
            channels = live.server.waitress.active_channels
            wait_until(lambda: all(channel.addr != peer for channel in list(channels.values())), what="the hang-up")
            return claimed

        lose_it_on_claim.setattr(live.store, "claim_jobs", claim_then_lose_the_worker)
    sock.sendall(f"POST /jobs/attempt?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode())
    return sock


class SmallDisk:
    """A tmpfs of a few MiB mounted for one test, which a filler file can make full."""

    def __init__(self, folder, size):
        folder.mkdir()
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs to fill needs root (CI and the dev container run as root)")
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
            capture_output=True,
            text=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
        self.folder = folder
        self.filler = folder / "filler"

    def free_bytes(self):
        stats = os.statvfs(self.folder)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave=0):
        """Take all space but `leave` bytes (a full disk with leave=0)."""
        with open(self.filler, "ab") as filler:
            size = max(0, self.free_bytes() - leave)
            try:
                filler.write(b"\0" * size)
                filler.flush()
            except OSError:
                pass  # as full as it gets

    def make_room(self):
        self.filler.unlink()

    def remount(self, options):
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.folder)], check=True)

    def unmount(self):
        subprocess.run(["umount", "--lazy", str(self.folder)], check=False)


class WorkerProcess:
    """`python lazyboss.py work` in a subprocess, its log lines collected."""

    def __init__(self, url, *args, command, env=None, cwd=None):
        self.process = start_process(
            [sys.executable, str(ROOT / "lazyboss.py"), "work", "--server", url, *args]
            + (["--", *command] if command else []),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.log = []
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stderr:
            self.log.append(line)
        self.ended.set()

    def logged(self, text):
        """The log lines that contain `text`."""
        return [line for line in self.log if text in line]

    def stop(self, timeout=10):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout)


@contextmanager
def statements_of_this_thread(store, callback):
    """Call `callback(sql)` before each SQL statement this thread runs through the store: its reads on
    its own connection, and its writes on the writer's connection, which other threads share."""
    me = threading.get_ident()

    def traced(sql):
        if threading.get_ident() == me:
            callback(sql)

    connections = (store.db, store.writer)
    for conn in connections:
        trace(conn, traced)
    try:
        yield
    finally:
        for conn in connections:
            trace(conn, None)


def trace(conn, callback):
    """Call `callback(sql)` before each statement `conn` runs (None: stop): SQLite's trace callback, or on
    PostgreSQL the connection's `execute` wrapped (psycopg has no such hook)."""
    if isinstance(conn, sqlite3.Connection):
        conn.set_trace_callback(callback)
    elif callback is None:
        del conn.execute  # the class's own again
    else:
        execute = type(conn).execute

        def traced(sql, parameters=()):
            callback(sql)
            return execute(conn, sql, parameters)

        conn.execute = traced


def begins_a_write(store):
    """What the statement that takes the write lock (begins a write) holds, on the store's engine."""
    return "BEGIN IMMEDIATE" if store.engine.keeps_a_file else "pg_advisory_xact_lock"


@contextmanager
def interleave(store, statement, action, nth=1):
    """Run `action` on another thread right before this thread's `nth` SQL statement containing `statement`.

    This makes a race deterministic: `action` (with its own connection) commits
    between two of the store's reads, or before its one read. If this thread
    holds the database's write lock at that point, `action` cannot commit
    before it, so it runs alongside and is awaited at the end. An `action`
    never reached during the block runs at its end, so that the test can count
    on its effect. Right before a write begins (`begins_a_write`) this thread
    already holds the store's own lock: there `action` must write through a
    second Store, as another process (or replica) would.
    """
    seen = {"matches": 0, "writing": False}
    runner = {}
    begin = begins_a_write(store).upper()

    def traced(sql):
        if statement in sql and "thread" not in runner:
            seen["matches"] += 1
            if seen["matches"] == nth:
                runner["thread"] = threading.Thread(target=lambda: runner.update(result=action()))
                runner["thread"].start()
                if not seen["writing"]:
                    runner["thread"].join()
        words = sql.upper()
        if begin in words:
            seen["writing"] = True
        elif re.search(r"\bCOMMIT\b|\bROLLBACK\b(?!\s+TO\b)", words):  # PostgreSQL's ends a script
            seen["writing"] = False

    with statements_of_this_thread(store, traced):
        yield runner
    if "thread" not in runner:
        runner["result"] = action()
    else:
        runner["thread"].join()


@contextmanager
def write_lock_held(store):
    """Hold the database's write lock from another connection, as another process's (or replica's) big
    batch would."""
    blocker = store.engine.connect(store.path)
    store.engine.begin(blocker)
    try:
        yield
    finally:
        blocker.execute("COMMIT")
        blocker.close()


def start_blocked_on_the_write_lock(store, call):
    """Run `call` on a thread and return, as a Future, once it waits for the write lock (see `write_lock_held`)."""
    future, waiting = Future(), threading.Event()

    def run():
        try:
            with statements_of_this_thread(
                store, lambda sql: sql.lstrip().upper().startswith("BEGIN") and waiting.set()
            ):
                future.set_result(call())
        except BaseException as error:  # handed to the test through the future
            future.set_exception(error)
        finally:
            waiting.set()

    threading.Thread(target=run, daemon=True).start()
    assert waiting.wait(10), "the call never began a transaction"
    if not store.engine.keeps_a_file:  # a round trip away: await its wait for the lock (SQLite's is not seen)
        waits = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        wait_until(lambda: rows(store, waits) == [(1,)], what="the call to wait for the write lock")
    return future


def finished(server, job_id, timeout=20):
    """The job once it has finished."""
    client = server.client()

    def done():
        job = client.request("GET", f"/jobs/{job_id}").json
        return job if job["status"] in ("done", "failed", "cancelled") else None

    return wait_until(done, timeout=timeout, what=f"job {job_id} to finish")


def submit(server, job_type, parameters=None, **fields):
    """Submit a job over HTTP; its id."""
    response = server.client().request("POST", "/jobs", {"type": job_type, "parameters": parameters or {}, **fields})
    assert response.status == 202
    return response.json["id"]


def job_status(server, job_id):
    return server.client().request("GET", f"/jobs/{job_id}").json["status"]


# Runs the job's parameter `run` as a shell command, in place of itself (so a signal hits the command).
RUN_PARAMETER = [
    sys.executable,
    "-c",
    "import json, os, sys; os.execvp('sh', ['sh', '-c', json.load(sys.stdin)['run']])",
]


def running(pid):
    """Whether a process runs (a zombie has ended too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[-1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between it and the read
        return False


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, folder):
        self.path = str(folder / "notify.sock")
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.path)
        self.socket.settimeout(10)
        self.received = []

    def wait_for(self, assignment):
        """Read messages until one carries `assignment` (e.g. READY=1); return that message."""
        for message in self.received:
            if assignment in message.split("\n"):
                return message
        while True:
            message = self.socket.recv(4096).decode()
            self.received.append(message)
            if assignment in message.split("\n"):
                return message

    def keep_reading(self):
        """Read every message into `received` until the socket is closed (run it on a thread of its own)."""
        self.socket.settimeout(None)
        with suppress(OSError):
            while True:
                self.received.append(self.socket.recv(4096).decode())


def postgres_binaries():
    """The directory of Debian's newest PostgreSQL server programs, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda path: int(path.parent.parent.name))
    return found[-1].parent if found else None


class PostgresCluster:
    """A throwaway PostgreSQL cluster: `initdb` into a temporary directory as the `postgres` user (root
    may not run it), listening on 127.0.0.1 at a free port; `stop` removes it."""

    def __init__(self, binaries, directory):
        self.binaries = Path(binaries)
        self.directory = Path(directory)
        self.port = free_port()

    def _command(self, program, *arguments):
        command = [str(self.binaries / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return command

    def _run(self, program, *arguments):
        return subprocess.run(
            self._command(program, *arguments), capture_output=True, text=True, timeout=60, check=True
        )

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        data = self.directory / "data"
        self._run("initdb", "-D", str(data), "-U", "lazyboss", "--auth=trust", "-E", "UTF8", "--no-sync")
        # fsync off: a test cluster need not survive the host's power loss, and CI's disk is shared.
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.directory}"
            " -c fsync=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(data), "-w", "-l", str(self.directory / "log"), "-o", options, "start")
        # A pytest killed before `stop` (kill -9, a CI timeout) would leave the cluster running: a watcher
        # of its own session stops and removes it once the pipe from this process closes, however it ends.
        stop = self._command("pg_ctl", "-D", str(data), "-w", "-m", "immediate", "stop")
        self._watcher = subprocess.Popen(
            [
                "sh",
                "-c",
                'read -r _; "$@" >/dev/null 2>&1; stopped=$?; rm -rf "$0"; exit $stopped',
                str(self.directory),
                *stop,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def stop(self):
        self._watcher.stdin.close()
        if self._watcher.wait(timeout=60) != 0:
            raise RuntimeError(
                f"pg_ctl stop failed for the cluster in {self.directory} (exit {self._watcher.returncode})"
            )

    def url(self, database="postgres"):
        return f"postgresql://lazyboss@127.0.0.1:{self.port}/{database}"

    def create_database(self):
        """A new, empty database's URL."""
        import psycopg

        name = f"test_{uuid.uuid4().hex}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def lazyboss_database(self):
        """The URL of the session's database with lazyboss's tables, emptied for each test: DELETE, with
        triggers and foreign keys off, and the sequences restarted, then VACUUM (the rows deleted, or left by
        a rolled-back batch of 10,000, would slow the next tests' claims, and the planner would take the
        tables for full): 50 ms a test, where a new database copies the whole catalog and TRUNCATE makes
        each table's files anew (0.15 to 0.3 s)."""
        import psycopg

        import lazyboss

        name = "lazyboss_tests"
        if not getattr(self, "_emptying", None):
            with psycopg.connect(self.url(), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            engine = lazyboss._PostgresEngine(self.url(name))
            db = engine.connect()
            try:
                engine.begin(db)
                for number, migration in enumerate(engine.migrations):
                    engine.apply(db, migration)
                    engine.set_schema_version(db, number + 1)
                db.execute("COMMIT")
                tables = db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
                sequences = db.execute("SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'").fetchall()
            finally:
                db.close()
            emptied = [table for (table,) in tables if table not in ("lazyboss_schema", "event_counter")]
            self._emptying = [
                "SET session_replication_role = replica",
                *(f"DELETE FROM {table}" for table in emptied),
                *(f"ALTER SEQUENCE {sequence} RESTART" for (sequence,) in sequences),
                "UPDATE event_counter SET last = 0",
            ]
            self._vacuum = f"VACUUM {', '.join(emptied)}"
        with psycopg.connect(self.url(name), autocommit=True) as db:
            db.execute("; ".join(self._emptying))  # one transaction
            db.execute(self._vacuum)  # never inside one
        return self.url(name)
