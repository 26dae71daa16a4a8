"""Several lazyboss processes on one PostgreSQL database (issue 17): claims exactly once, wake-ups across
replicas, one job per schedule tick, and a replica killed under load losing nothing acknowledged."""

import concurrent.futures
import http.client
import statistics
import threading
import time

import pytest

from support import ServerProcess, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def replicas(postgres_store_url):
    """Two `lazyboss.py` processes serving one PostgreSQL database."""
    started = [ServerProcess(postgres_store_url, "--reap-interval", "0.1") for _ in range(2)]
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def sql(postgres_store_url):
    """Run one query on the replicas' database: its rows."""
    import psycopg

    conn = psycopg.connect(postgres_store_url, autocommit=True)

    def query(text, *parameters):
        return conn.execute(text, parameters).fetchall()

    yield query
    conn.close()


def test_eight_claimers_split_across_two_replicas_take_each_of_5000_jobs_once(replicas, sql):
    for n in range(5):
        batch = [{"type": "bulk", "parameters": {"n": n * 1000 + i}} for i in range(1000)]
        assert replicas[n % 2].client().request("POST", "/jobs", batch).status == 202

    def claim_until_empty(worker):
        client, taken = replicas[worker % 2].client(user=f"w{worker}"), []
        while True:
            response = client.request("POST", "/jobs/attempt?type=bulk&max=50")
            if response.status == 204:
                return taken
            assert response.status == 201, response.json
            taken += [(job["id"], job["attempt"]) for job in response.json["jobs"]]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        claims = sum(pool.map(claim_until_empty, range(8)), [])
    assert len(claims) == 5000 and len({job for job, _ in claims}) == 5000
    assert all(attempt == "1" for _, attempt in claims)
    assert sql("SELECT COUNT(*), COUNT(DISTINCT job_id) FROM attempts") == [(5000, 5000)]
    assert sql("SELECT status, attempts, COUNT(*) FROM jobs GROUP BY 1, 2") == [("processing", 1, 5000)]
    events = [row[0] for row in sql("SELECT id FROM events ORDER BY id")]
    assert events == list(range(1, 10_001))  # 5,000 submitted and 5,000 claimed, numbered without a gap


def test_a_long_poll_on_one_replica_is_woken_by_a_submit_on_the_other(replicas):
    waiting_on, submitting_to = replicas
    latencies, stats = [], waiting_on.client()

    def poll(answer):
        answer["response"] = waiting_on.client(user="w1").request("POST", "/jobs/attempt?type=wake&wait=10")
        answer["at"] = time.monotonic()

    for _ in range(10):
        answer = {}
        poller = threading.Thread(target=poll, args=(answer,))
        poller.start()
        wait_until(lambda: stats.request("GET", "/stats").json["waiting_workers"] == 1, what="the poll to wait")
        submitted = time.monotonic()
        assert submitting_to.client().request("POST", "/jobs", {"type": "wake"}).status == 202
        poller.join(10)
        assert answer["response"].status == 201
        latencies.append(answer["at"] - submitted)
    median = statistics.median(latencies)
    print(f"wake-up across replicas: median {median * 1000:.1f} ms, worst {max(latencies) * 1000:.1f} ms")
    # Without NOTIFY the poll would wait for the one-second look for other writers.
    assert median < 0.3, latencies


def test_a_schedule_every_second_on_two_replicas_makes_one_job_per_tick(replicas, sql):
    client = replicas[0].client()
    assert client.request("PUT", "/schedules/tick", {"type": "tick", "every": "1 second"}).status in (200, 201)
    started = time.monotonic()
    # Both replicas' reapers look every 0.1 s: each tick is seen by both several times over.
    wait_until(lambda: sql("SELECT COUNT(*) FROM jobs WHERE type = 'tick'") == [(4,)], timeout=15, what="4 ticks")
    assert client.request("DELETE", "/schedules/tick").status in (200, 204)
    ticks = sql("SELECT schedule_tick FROM jobs WHERE type = 'tick' ORDER BY id")
    assert 4 <= len(ticks) <= int(time.monotonic() - started) + 2, ticks
    assert len({tick for (tick,) in ticks}) == len(ticks)
    assert sql("SELECT COUNT(*) FROM schedules") == [(0,)]  # no replica failed a tick (it would say so)


def test_a_replica_killed_under_load_loses_no_acknowledged_job(replicas, sql):
    first, second = replicas
    acknowledged = []
    for n in range(6):
        batch = [{"type": "work", "parameters": {"n": n * 50 + i}, "timeout": 2} for i in range(50)]
        response = replicas[n % 2].client().request("POST", "/jobs", batch)
        assert response.status == 202
        acknowledged += [job["id"] for job in response.json]
    finished = threading.Event()

    def work(worker):
        servers = [replicas[worker % 2], replicas[(worker + 1) % 2]]  # its own replica, then the other
        client = servers[0].client(user=f"w{worker}", timeout=5)
        while not finished.is_set():
            try:
                response = client.request("POST", "/jobs/attempt?type=work&wait=1")
                if response.status == 201:
                    job = response.json
                    client.request("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/result", {"by": worker})
            except (OSError, http.client.HTTPException):
                if servers[0].process.poll() is not None:
                    servers.reverse()
                client = servers[0].client(user=f"w{worker}", timeout=5)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        workers = [pool.submit(work, worker) for worker in range(6)]
        wait_until(lambda: sql("SELECT COUNT(*) FROM jobs WHERE status = 'done'")[0][0] >= 60, what="some work done")
        # A job whose worker got it from the replica about to die, and dies with it: it is never reported.
        lost = first.client(user="lost").request("POST", "/jobs/attempt?type=work")
        assert lost.status == 201
        first.process.kill()  # kill -9, mid-claim and mid-report for some
        wait_until(
            lambda: sql("SELECT COUNT(*) FROM jobs WHERE status = 'done'")[0][0] == len(acknowledged),
            timeout=40,
            what="every acknowledged job done by the survivor",
        )
        finished.set()
        for future in workers:
            future.result(timeout=15)
    assert second.client().request("GET", "/health").status == 200
    done = sql("SELECT job_id, COUNT(*) FROM attempts WHERE status = 'done' GROUP BY job_id")
    assert sorted(str(job) for job, _ in done) == sorted(acknowledged) and {count for _, count in done} == {1}
    expired = sql("SELECT COUNT(*) FROM attempts WHERE status = 'expired'")[0][0]
    assert expired >= 1 and sql("SELECT worker FROM attempts WHERE job_id = %s ORDER BY id", lost.json["id"])[0] == (
        "lost",
    )
    print(f"{len(acknowledged)} jobs done once each; {expired} attempts of the killed replica expired and were redone")
