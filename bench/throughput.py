#!/usr/bin/env python3
"""Throughput and wake-up latency of a real lazyboss process, printed as JSON.

    python bench/throughput.py [--seconds 3] [--sync full normal]

For each --sync mode it starts `lazyboss.py` on a temporary database and
measures, with keep-alive HTTP clients on loopback:
  - single submits/s with 1 and 4 client threads,
  - batch submit jobs/s (batches of 1,000),
  - claim→result cycles/s with 4 workers,
  - long-poll wake-up latency (submit sent → waiting worker has the job), p50/p99.
For scale it first measures the same 4 clients against a bare waitress
"hello world" app: the ceiling of any single-request figure on this machine.
"""

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Client:
    """One keep-alive connection speaking JSON."""

    def __init__(self, port, user="bench"):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": "Bearer " + user, "Content-Type": "application/json"}

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


def start_server(*args):
    """Start `lazyboss.py ARGS` (or, without args, a bare waitress app); wait until it answers."""
    port = free_port()
    command = [sys.executable, str(ROOT / "lazyboss.py"), "--port", str(port), "--threads", "16", *args]
    if not args:
        command = [sys.executable, "-c", HELLO_WORLD, str(port)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if Client(port).call("GET", "/health")[0] == 200:
                return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the server did not start")


@contextlib.contextmanager
def running_server(*args):
    """A lazyboss.py process with ARGS, on a database in a temporary folder: (its port, the file)."""
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "bench.sqlite")
        process, port = start_server("--db", db, "--log-level", "warning", *args)
        try:
            yield port, db
        finally:
            process.terminate()
            process.wait(30)


def in_threads(count, work):
    """Run work(index) in `count` threads; return the seconds they took together."""
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def single_submits(port, clients, seconds, path="/jobs", expect=202):
    counts = [0] * clients

    def work(index):
        client = Client(port)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            assert client.call("POST", path, {"type": "single", "parameters": {"n": counts[index]}})[0] == expect
            counts[index] += 1

    elapsed = in_threads(clients, work)
    return round(sum(counts) / elapsed)


def batch_submits(port, batches, size=1000):
    client = Client(port)
    batch = [{"type": "batch", "parameters": {"n": n}} for n in range(size)]
    started = time.perf_counter()
    for _ in range(batches):
        assert client.call("POST", "/jobs", batch)[0] == 202
    return round(batches * size / (time.perf_counter() - started))


def claim_result_cycles(port, jobs, workers=4):
    feeder = Client(port)
    for _ in range(jobs // 1000):
        feeder.call("POST", "/jobs", [{"type": "cycle", "parameters": n} for n in range(1000)])
    done = [0] * workers

    def work(index):
        client = Client(port, user=f"w{index}")
        while True:
            status, job = client.call("POST", "/jobs/attempt?type=cycle")
            if status == 204:
                return
            client.call("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/result", {"ok": True})
            done[index] += 1

    elapsed = in_threads(workers, work)
    return round(sum(done) / elapsed)


def wake_up_latency(port, samples):
    monitor, submitter, worker = Client(port), Client(port), Client(port, user="waiter")
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
    latencies.sort()
    return {
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 2),
    }


def measure(sync, seconds):
    with running_server("--sync", sync) as (port, _):
        return {
            "single_submits_per_s_1_client": single_submits(port, 1, seconds),
            "single_submits_per_s_4_clients": single_submits(port, 4, seconds),
            "batch_submit_jobs_per_s": batch_submits(port, batches=20),
            "claim_result_cycles_per_s_4_workers": claim_result_cycles(port, jobs=4000),
            "wake_up_latency": wake_up_latency(port, samples=200),
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each timed submit run lasts")
    parser.add_argument("--sync", nargs="+", default=["full", "normal"], choices=["full", "normal"])
    args = parser.parse_args()
    report = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    process, port = start_server()
    try:
        report["bare_waitress_requests_per_s_4_clients"] = single_submits(port, 4, args.seconds, "/", 200)
    finally:
        process.terminate()
        process.wait(30)
    for sync in args.sync:
        report[f"sync_{sync}"] = measure(sync, args.seconds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
