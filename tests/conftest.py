"""Shared fixtures: a store on a temporary SQLite file (or, for the modules of BOTH_ENGINES, on a fresh
PostgreSQL database too), the app in-process, and a live server."""

import signal
import tempfile
import threading

import pytest
import webtest

import lazyboss
from support import Client, PostgresCluster, ServerProcess, SmallDisk, WorkerProcess, postgres_binaries

TEST_TIME_LIMIT = 60

# Test modules whose store-level and live-server tests run on both engines: each test that uses the
# `database` fixture (through `store`, `app`, `live`…) runs once per engine, PostgreSQL's skipped where
# no cluster can be started. A test about SQLite's file itself is marked `sqlite_only`.
BOTH_ENGINES = {
    "test_api",
    "test_batches",
    "test_streams",
    "test_supervisor",
    "test_type_config",
    "test_claim_windows",
    "test_cron",
    "test_held_jobs",
    "test_concurrency_slots",
}


def pytest_generate_tests(metafunc):
    if (
        metafunc.module.__name__ in BOTH_ENGINES
        and "database" in metafunc.fixturenames
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
