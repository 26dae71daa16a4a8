#!/usr/bin/env python3
"""Claim latency with claim windows and labels on 100,000 pending jobs, printed as JSON.

    python bench/claim_windows.py [--jobs 100000] [--claims 200]

For each queue below, a fresh database gets --jobs pending jobs of type `t`
(in batches of 1,000), then a worker claims --claims times, one job a claim
(and, last, batches of `max=50`), through `Store.claim_jobs`: the one
UPDATE ... RETURNING statement the HTTP claim runs, in its transaction,
without the HTTP around it. Figures are milliseconds per claim (p50, p99),
with `--sync normal` so that the disk's fsync does not hide the query; the
query alone (`_claimable`, read-only) is timed too.

  open:            no job has claims.
  others_reserved: every job is reserved (in its window) for host "other",
                   but for one open job per 1,000; the worker is host "me".
  mine_reserved:   every job is reserved for host "me", the worker.
  lapsed:          every job was reserved for "other", the window has passed
                   and the reaper has not yet moved them to the open queue.
  lapsed_swept:    the same once the reaper has (its time is `sweep_ms`).
  mixed:           a third each: open, reserved for "other", for "me" (with
                   a second claim, arch in a list, that "me" matches too).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lazyboss  # noqa: E402

WORKER = {"host": "me", "arch": "arm64"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def spec(queue: str, n: int) -> lazyboss.JobSpec:
    job = lazyboss.JobSpec(type="t", parameters={"n": n}, priority=n % 3)
    if queue == "others_reserved" and n % 1000:
        job.claims, job.claim_window = {"host": "other"}, 3600
    elif queue == "mine_reserved":
        job.claims, job.claim_window = {"host": "me"}, 3600
    elif queue in ("lapsed", "lapsed_swept"):
        job.claims, job.claim_window = {"host": "other"}, 10
    elif queue == "mixed" and n % 3:
        host = "other" if n % 3 == 1 else "me"
        job.claims, job.claim_window = {"host": host, "arch": ["arm64", "armv7"]}, 3600
    return job


def percentiles(samples: list[float]) -> dict:
    samples = sorted(samples)
    return {
        "p50_ms": round(statistics.median(samples) * 1000, 3),
        "p99_ms": round(samples[int(len(samples) * 0.99) - 1] * 1000, 3),
    }


def measure(queue: str, jobs: int, claims: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        clock = Clock()
        store = lazyboss.Store(os.path.join(folder, "bench.sqlite"), sync="normal", clock=clock)
        try:
            for start in range(0, jobs, 1000):
                store.submit_jobs([spec(queue, n) for n in range(start, min(jobs, start + 1000))])
            clock.now += 60  # the "lapsed" windows (10 s) have passed; the others (an hour) have not
            swept = {}
            if queue == "lapsed_swept":
                started = time.perf_counter()
                while store.open_lapsed_reservations():
                    pass
                swept["sweep_ms"] = round((time.perf_counter() - started) * 1000)
            query_times = []
            for _ in range(claims):
                query, parameters = store.engine.claimable(["t"], WORKER, clock.now, 1, lazyboss._WRITE_BUDGET)
                started = time.perf_counter()
                store.db.execute(query, parameters).fetchall()
                query_times.append(time.perf_counter() - started)
            claim_times, taken = [], 0
            for _ in range(claims):
                started = time.perf_counter()
                taken += len(store.claim_jobs("w1", ["t"], 1, WORKER))
                claim_times.append(time.perf_counter() - started)
            batch_times, batch_taken = [], 0
            for _ in range(10):
                started = time.perf_counter()
                batch_taken += len(store.claim_jobs("w1", ["t"], 50, WORKER))
                batch_times.append(time.perf_counter() - started)
            return {
                **swept,
                "query": percentiles(query_times),
                "claim": {**percentiles(claim_times), "jobs_taken": taken},
                "batch_claim_max_50": {**percentiles(batch_times), "jobs_taken": batch_taken},
            }
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()
    report = {"jobs": args.jobs, "sqlite": lazyboss.sqlite3.sqlite_version, "python": sys.version.split()[0]}
    for queue in ("open", "others_reserved", "mine_reserved", "lapsed", "lapsed_swept", "mixed"):
        report[queue] = measure(queue, args.jobs, args.claims)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
