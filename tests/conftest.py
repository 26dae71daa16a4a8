"""Shared fixtures: a store on a temporary SQLite file and on an emptied PostgreSQL database (see
SQLITE_ONLY), the app in-process, and a live server."""

import signal
import tempfile
import threading

import pytest
import webtest

import lazyboss
from support import Client, PostgresCluster, ServerProcess, SmallDisk, WorkerProcess, postgres_binaries

TEST_TIME_LIMIT = 60

# Which engine a test runs on. Every test that uses the `database` fixture (through `store`, `app`, `live`,
# `start_live`…) runs once on SQLite and once on PostgreSQL (skipped where no cluster can be started), except
# in the modules below (about SQLite itself, or above the store); a single test about SQLite's file elsewhere is marked
# `sqlite_only`. Tests without the fixture run once: they need no database (parsers, the client's and the
# command line's arguments), or start `lazyboss.py` processes on a file of their own (`server`,
# `ServerProcess`, `small_disk`, `tmp_path`: the process, the worker, the command line, a full disk, SQLite's
# file and group commit in test_database_files and test_group_commit; tests/test_postgres.py and
# test_replicas.py start processes on PostgreSQL). A new test of the store or the API runs on both engines;
# a module that defines its own `database` fixture chooses its engine itself (test_postgres_operations).
SQLITE_ONLY = {
    "test_storage": "the file: read-only at run time, deleted under the server, a commit SQLite fails",
    "test_database_incidents": "the file lost while running, a commit refused for a file no longer there",
    # What they test is above the store, which the rest of the suite runs on both engines: once is enough.
    "test_availability": "HTTP connections and their timeouts (waitress's)",
    "test_status_browser": "the status page in a browser",
    "test_foreign_answers": "the client and the worker facing a server that is not lazyboss",
}


def pytest_generate_tests(metafunc):
    if (
        metafunc.module.__name__ not in SQLITE_ONLY
        and "database" in metafunc.fixturenames
        and not hasattr(metafunc.module, "database")  # a module with its own `database` chose its engine
        and metafunc.definition.get_closest_marker("sqlite_only") is None
    ):
        metafunc.parametrize("database", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture(autouse=True)
def hang_guard():
    """Fail a test that runs over the limit instead of letting it eat CI's time."""

    def expire(signum, frame):
        raise TimeoutError(f"test ran over {TEST_TIME_LIMIT} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIME_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


class Clock:
    """A settable clock for the store, so delays and leases need no sleeping."""

    def __init__(self, start=1_800_000_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "jobs.sqlite")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def database(request, db_path):
    """Where the test's store lives: the SQLite file `db_path`, or (parametrised) a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return db_path
    return request.getfixturevalue("postgres_store_url")


@pytest.fixture
def store(database, clock):
    store = lazyboss.Store(database, clock=clock)
    yield store
    store.close()


@pytest.fixture
def config():
    return lazyboss.Config(max_body=64 * 1024)


@pytest.fixture
def app(store, config):
    return webtest.TestApp(lazyboss.make_app(store, config))


class LiveServer:
    """A real waitress server on a free loopback port, in a thread."""

    def __init__(self, store, config):
        self.store = store
        self.reaper = lazyboss.Reaper(store, interval=0.05)
        self.server = lazyboss.Server(store, config, self.reaper)
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"grace": 5}, daemon=True)

    def client(self, **kwargs):
        return Client(self.url, **kwargs)


@pytest.fixture
def live_store(database):
    store = lazyboss.Store(database)
    yield store
    store.close()


@pytest.fixture
def start_live(live_store):
    """Start live servers on the test's store; each is stopped (and must stop) at the end."""
    started = []

    def start(**settings):
        config = lazyboss.Config(**{"port": 0, "threads": 12, "max_wait": 30, "heartbeat": 0.5, **settings})
        live = LiveServer(live_store, config)
        live.thread.start()
        live.reaper.start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.server.stop()
        live.thread.join(timeout=10)
        live.reaper.stop()
        live.reaper.join(timeout=10)
        assert not live.thread.is_alive(), "the server did not stop"


@pytest.fixture
def live(start_live):
    return start_live()


@pytest.fixture
def server(tmp_path):
    """`lazyboss.py` in a process on a fresh file."""
    server = ServerProcess(tmp_path / "cli.sqlite", "--reap-interval", "0.1")
    yield server
    server.stop()


@pytest.fixture
def start_worker(server):
    """Start `lazyboss.py work` processes (on `server` unless told otherwise); each is killed at the end."""
    workers = []

    def start(*args, command, url=None, env=None):
        worker = WorkerProcess(url or server.url, *args, command=command, env=env)
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def small_disk(tmp_path):
    """Mount small tmpfs disks for the test (skipped where that is impossible): small_disk("4m")."""
    disks = []

    def mount(size="4m"):
        disk = SmallDisk(tmp_path / f"disk{len(disks)}", size)
        disks.append(disk)
        return disk

    yield mount
    for disk in disks:
        disk.unmount()


@pytest.fixture(scope="session")
def postgres_cluster():
    """One throwaway PostgreSQL cluster for the session; skipped, saying why, without its programs."""
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install -e '.[test]'")
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's programs are missing: apt-get install -y postgresql")
    # Not under pytest's own temporary directory: the `postgres` user may not enter root's.
    cluster = PostgresCluster(binaries, tempfile.mkdtemp(prefix="lazyboss-postgres-")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster):
    """A fresh, empty database of the session's cluster for one test."""
    return postgres_cluster.create_database()


@pytest.fixture
def postgres_store_url(postgres_cluster):
    """The session's database with lazyboss's tables, empty: the same for every test, emptied before each."""
    return postgres_cluster.lazyboss_database()
