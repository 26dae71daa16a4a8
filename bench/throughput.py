#!/usr/bin/env python3
"""Throughput, latency and idle footprint of a real lazyboss process, printed as JSON.

    python bench/throughput.py [--seconds 3] [--sync full] [--baseline OLD_LAZYBOSS.py] [--only NAME ...]
    python bench/throughput.py --db postgresql://USER@HOST/NAME [--replicas 2] [--only NAME ...]

It first measures 4 keep-alive clients against a bare waitress "hello world"
app (the ceiling of any single-request figure on this machine), then, for
each --sync mode, starts `lazyboss.py` on a temporary database and measures
on loopback, in this one run:
  - single submits/s with 1, 4 and 16 client threads (group commit at work), and with 4 the
    server's CPU time (user and system) per submit, beside bare waitress's per request,
  - batch submit jobs/s (batches of 1,000),
  - claim→result cycles/s with 4 workers, one job per request, and the server's CPU time per cycle,
  - batch claim of 100 + batch report of 100 with 4 workers, jobs/s,
  - long-poll wake-up latency (submit sent → waiting worker has the job), p50/p99,
  - 100 followers of /events (--threads 120): submit sent → each follower has its event, p50/p99,
  - idle: time to ready (start → /health answers), resident memory after 2 s, CPU over 5 s;
    both as `python lazyboss.py` runs it (the source compiled at each start) and as installed
    (`lazyboss`, from bytecode compiled once).
With --baseline it measures another lazyboss.py (an older release, say) the same
way in the same run: figures compare only within one run on a shared machine.
With --db it measures on that PostgreSQL database instead (emptied before each
server starts: give it one of its own), with --replicas processes on it (1):
the clients of each figure are spread over them in turn, and the wake-up's
worker waits on the first while the job is submitted to the last.
Load figures are measured --rounds times (3), the programs taking turns, and
each printed figure is the median of its rounds. A figure the baseline cannot
give (no batch claims) is null.
"""

import argparse
import base64
import contextlib
import http.client
import json
import os
import platform
import py_compile
import selectors
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAZYBOSS = ROOT / "lazyboss.py"


class Client:
    """One keep-alive connection speaking JSON."""

    def __init__(self, port, user="bench"):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        # As lazyboss's client names itself in open mode (-u NAME:): a name, no secret.
        basic = base64.b64encode(f"{user}:".encode()).decode()
        self.headers = {"Authorization": "Basic " + basic, "Content-Type": "application/json"}

    def call(self, method, path, body=None):
        self.connection.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
        response = self.connection.getresponse()
        data = response.read()
        return response.status, (json.loads(data) if data else None)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


HELLO_WORLD = """
import sys, waitress
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
    return [b"{}"]
waitress.serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=16, _quiet=True)
"""


def wait_for_health(process, port, timeout=15):
    """Seconds until `GET /health` answers 200, polling every millisecond."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            if Client(port).call("GET", "/health")[0] == 200:
                return time.perf_counter() - started
        except OSError:
            time.sleep(0.001)
    process.kill()
    raise SystemExit("the server did not start")


def empty(url):
    """Empty a PostgreSQL database (lazyboss's alone) of everything: the server makes its tables again, so a
    --baseline of another schema version is measured on the same database."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


def start_server(*args, program=LAZYBOSS, command=None):
    """Start `program ARGS` (a lazyboss.py; without args a bare waitress app); wait until it answers."""
    port = free_port()
    if command is None:
        command = [sys.executable, str(program)] if args else [sys.executable, "-c", HELLO_WORLD, str(port)]
    if args:
        command = command + [*args, "--port", str(port)] + ([] if "--threads" in args else ["--threads", "16"])
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_health(process, port)
    return process, port


@contextlib.contextmanager
def running_server(*args, program=LAZYBOSS, db=None, replicas=1):
    """`replicas` lazyboss.py processes with ARGS on one database, a file in a temporary folder or the
    PostgreSQL database `db` (emptied first): their ports, their process ids and the database."""
    with tempfile.TemporaryDirectory() as folder:
        if db is None:
            db = os.path.join(folder, "bench.sqlite")
        else:
            empty(db)
        started = []
        try:
            for _ in range(replicas):
                started.append(start_server("--db", db, "--log-level", "warning", *args, program=program))
            yield [port for _, port in started], [process.pid for process, _ in started], db
        finally:
            for process, _ in started:
                process.terminate()
                process.wait(30)


@contextlib.contextmanager
def one_server(*args):
    """One lazyboss.py with ARGS on a fresh SQLite file: its port and the file's path."""
    with running_server(*args) as (ports, _, db):
        yield ports[0], db


def in_threads(count, work):
    """Run work(index) in `count` threads; return the seconds they took together."""
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def percentiles(samples):
    samples = sorted(samples)
    return {
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[max(0, int(len(samples) * 0.99) - 1)], 2),
    }


# -- the figures


def single_submits(ports, clients, seconds, path="/jobs", expect=202):
    counts = [0] * clients

    def work(index):
        client = Client(ports[index % len(ports)])
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            assert client.call("POST", path, {"type": "single", "parameters": {"n": counts[index]}})[0] == expect
            counts[index] += 1

    elapsed = in_threads(clients, work)
    return round(sum(counts) / elapsed)


def batch_submits(ports, batches, size=1000):
    client = Client(ports[0])
    batch = [{"type": "batch", "parameters": {"n": n}} for n in range(size)]
    started = time.perf_counter()
    for _ in range(batches):
        assert client.call("POST", "/jobs", batch)[0] == 202
    return round(batches * size / (time.perf_counter() - started))


def fill(ports, job_type, jobs):
    feeder = Client(ports[0])
    for _ in range(jobs // 1000):
        assert feeder.call("POST", "/jobs", [{"type": job_type, "parameters": n} for n in range(1000)])[0] == 202


def claim_result_cycles(ports, workers=4):
    """Cycles/s of claiming a "cycle" job and reporting its result, until none is left."""
    done = [0] * workers

    def work(index):
        client = Client(ports[index % len(ports)], user=f"w{index}")
        while True:
            status, job = client.call("POST", "/jobs/attempt?type=cycle")
            if status == 204:
                return
            client.call("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/result", {"ok": True})
            done[index] += 1

    elapsed = in_threads(workers, work)
    return round(sum(done) / elapsed)


def batch_claim_report(ports, jobs, workers=4, size=100):
    """Jobs/s through claims of `size` and reports of as many, or None where the server has no batch claims."""
    if Client(ports[0]).call("POST", "/jobs/attempt", {"types": ["none"], "max": 2})[0] == 422:
        return None
    fill(ports, "batched", jobs)
    done = [0] * workers

    def work(index):
        client = Client(ports[index % len(ports)], user=f"b{index}")
        while True:
            status, answer = client.call("POST", f"/jobs/attempt?type=batched&max={size}")
            if status == 204:
                return
            reports = [{"job": job["id"], "attempt": job["attempt"], "result": {"ok": True}} for job in answer["jobs"]]
            status, outcome = client.call("POST", "/jobs/reports", reports)
            assert status == 200 and all(item["status"] == 201 for item in outcome["reports"])
            done[index] += len(reports)

    elapsed = in_threads(workers, work)
    return round(sum(done) / elapsed)


def wake_up_latency(ports, samples):
    monitor, submitter, worker = Client(ports[0]), Client(ports[-1]), Client(ports[0], user="waiter")
    latencies = []
    for _ in range(samples):
        received = {}

        def poll(received=received):
            status, job = worker.call("POST", "/jobs/attempt?wait=30&type=wake")
            received["at"] = time.perf_counter()
            worker.call("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/result", None)

        thread = threading.Thread(target=poll)
        thread.start()
        while monitor.call("GET", "/stats")[1]["waiting_workers"] < 1:
            time.sleep(0.001)
        sent = time.perf_counter()
        submitter.call("POST", "/jobs", {"type": "wake"})
        thread.join()
        latencies.append((received["at"] - sent) * 1000)
    return percentiles(latencies)


def follower_latency(ports, followers, samples):
    """Submit → event latency at each of `followers` followers of /events, read by one selector thread."""
    selector, seen = selectors.DefaultSelector(), {}
    for number in range(followers):
        sock = socket.create_connection(("127.0.0.1", ports[0]), timeout=30)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, number)
    arrivals = {}  # (follower, job id) -> when it arrived
    buffers = [b""] * followers
    opened, stop = set(), threading.Event()

    def read():
        while not stop.is_set():
            for key, _ in selector.select(0.05):
                data = key.fileobj.recv(65536)
                now = time.perf_counter()
                opened.add(key.data)
                buffers[key.data] += data
                *events, buffers[key.data] = buffers[key.data].split(b"\n\n")
                for event in events:
                    for line in event.split(b"\n"):
                        if line.startswith(b"data: "):
                            job_id = json.loads(line[6:])["job"]["id"]
                            arrivals[(key.data, job_id)] = now

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    while len(opened) < followers and time.monotonic() < deadline:  # each has its `retry:` line
        time.sleep(0.01)
    client, sent = Client(ports[-1]), {}
    for _ in range(samples):
        started = time.perf_counter()
        job_id = client.call("POST", "/jobs", {"type": "followed"})[1]["id"]
        sent[job_id] = started
        while sum((number, job_id) in arrivals for number in range(followers)) < followers:
            if time.perf_counter() - started > 10:
                raise SystemExit("a follower missed an event")
            time.sleep(0.0005)
    stop.set()
    reader.join()
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    seen = [(arrivals[(number, job_id)] - at) * 1000 for job_id, at in sent.items() for number in range(followers)]
    return percentiles(seen)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as status:
        return round(int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024, 1)


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def with_server_cpu(pids, run):
    """run() gives a rate (things per second): it, and the CPU time the server processes took for each
    thing, in milliseconds (user and system)."""
    before, started = sum(map(cpu_seconds, pids)), time.perf_counter()
    rate = run()
    things = rate * (time.perf_counter() - started)
    return rate, round((sum(map(cpu_seconds, pids)) - before) * 1000 / things, 3)


def idle(program, installed, starts=3):
    """Time to ready, resident memory and CPU of an idle server (median of `starts`).

    `installed`: run from bytecode compiled once into a folder of its own, as the `lazyboss`
    command of a pip install does; else `python lazyboss.py`, which compiles the source at each start.
    """
    readies, memories, cpus = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, str(program)]
        if installed:
            shutil.copy(program, os.path.join(folder, "lazyboss.py"))
            py_compile.compile(os.path.join(folder, "lazyboss.py"), doraise=True)  # to __pycache__, as pip does
            command = [sys.executable, "-c", "import sys, lazyboss; sys.exit(lazyboss.main())"]
        for number in range(starts):
            port = free_port()
            db = os.path.join(folder, f"idle{number}.sqlite")
            process = subprocess.Popen(
                [*command, "--db", db, "--port", str(port), "--log-level", "warning"],
                cwd=folder,
                stdin=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": folder} if installed else None,
            )
            try:
                readies.append(wait_for_health(process, port))
                time.sleep(2)
                memories.append(rss_mb(process.pid))
                before = cpu_seconds(process.pid)
                time.sleep(5)
                cpus.append((cpu_seconds(process.pid) - before) / 5 * 100)
            finally:
                process.terminate()
                process.wait(30)
    return {
        "ready_s": round(statistics.median(readies), 3),
        "rss_mb": statistics.median(memories),
        "cpu_percent": round(statistics.median(cpus), 2),
    }


def measure(program, sync, seconds, only, db=None, replicas=1):
    """Every load figure of one lazyboss.py (those in `only`, if given)."""
    figures = {}

    def wanted(name):
        return not only or name in only

    with running_server("--sync", sync, program=program, db=db, replicas=replicas) as (ports, pids, _):
        if wanted("single"):
            figures["single_submits_per_s"] = {}
            for clients in (1, 4, 16):
                rate, cpu = with_server_cpu(pids, lambda n=clients: single_submits(ports, n, seconds))
                figures["single_submits_per_s"][clients] = rate
                if clients == 4:
                    figures["server_cpu_ms_per_single_submit_4_clients"] = cpu
        if wanted("batch"):
            figures["batch_submit_jobs_per_s"] = batch_submits(ports, batches=20)
        if wanted("cycles"):
            fill(ports, "cycle", 4000)
            rate, cpu = with_server_cpu(pids, lambda: claim_result_cycles(ports))
            figures["claim_result_cycles_per_s_4_workers"] = rate
            figures["server_cpu_ms_per_cycle_4_workers"] = cpu
        if wanted("batches"):
            figures["batch_claim_100_report_100_jobs_per_s_4_workers"] = batch_claim_report(ports, jobs=20000)
        if wanted("wake"):
            figures["wake_up_latency"] = wake_up_latency(ports, samples=200)
    if wanted("followers"):
        servers = running_server("--sync", sync, "--threads", "120", program=program, db=db, replicas=replicas)
        with servers as (ports, _, _):
            figures["event_latency_100_followers"] = follower_latency(ports, 100, samples=100)
    return figures


def median_of(rounds):
    """The figures of several rounds, each the median of its values (None stays None)."""
    first = rounds[0]
    if isinstance(first, dict):
        return {key: median_of([figures[key] for figures in rounds]) for key in first}
    if first is None:
        return None
    return round(statistics.median(rounds), 2)


def machine():
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {
        "cores": os.cpu_count(),
        "cpu": model if "model" in locals() else platform.processor(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg()[0],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each timed submit run lasts")
    parser.add_argument("--sync", nargs="+", default=["full"], choices=["full", "normal"])
    parser.add_argument("--baseline", type=Path, help="another lazyboss.py to measure the same way, in this run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every load figure; each is their median")
    parser.add_argument(
        "--only",
        nargs="+",
        default=[],
        choices=["single", "batch", "cycles", "batches", "wake", "followers", "idle"],
        help="measure only these figures",
    )
    parser.add_argument("--db", help="a PostgreSQL database (postgresql://…, emptied: lazyboss's alone) to measure on")
    parser.add_argument("--replicas", type=int, default=1, help="lazyboss processes on the --db database (1)")
    args = parser.parse_args()
    if args.replicas > 1 and not args.db:
        parser.error("--replicas needs --db (processes on one SQLite file share one writer)")
    report = {"date": date.today().isoformat(), "machine": machine(), "rounds": args.rounds}
    if args.db:
        report["database"] = f"PostgreSQL, {args.replicas} replica(s)"
    programs = {"lazyboss": LAZYBOSS, **({"baseline": args.baseline} if args.baseline else {})}
    bare, bare_cpu, runs = [], [], {(name, sync): [] for name in programs for sync in args.sync}
    for _ in range(args.rounds):  # in turns, so that the machine's other work weighs on each alike
        process, port = start_server()
        try:
            rate, cpu = with_server_cpu([process.pid], lambda p=port: single_submits([p], 4, args.seconds, "/", 200))
            bare.append(rate)
            bare_cpu.append(cpu)
        finally:
            process.terminate()
            process.wait(30)
        for name, sync in runs:
            runs[(name, sync)].append(measure(programs[name], sync, args.seconds, args.only, args.db, args.replicas))
    report["bare_waitress_requests_per_s_4_clients"] = statistics.median(bare)
    report["bare_waitress_server_cpu_ms_per_request"] = statistics.median(bare_cpu)
    for (name, sync), rounds in runs.items():
        figures = median_of(rounds)
        if "single_submits_per_s" in figures:
            share = figures["single_submits_per_s"][4] / report["bare_waitress_requests_per_s_4_clients"]
            figures["single_submits_4_clients_share_of_bare_waitress"] = round(share, 2)
        if (not args.only or "idle" in args.only) and not args.db:  # idle figures are the file's
            figures["idle_as_script"] = idle(programs[name], installed=False)
            figures["idle_as_installed"] = idle(programs[name], installed=True)
        report[f"{name}_sync_{sync}"] = figures
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
