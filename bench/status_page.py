#!/usr/bin/env python3
"""What the status page costs with a big queue, printed as JSON.

    python bench/status_page.py [--jobs 10000 100000 1000000] [--samples 20]

For each size it fills a database with that many jobs (through the Store: 80 %
done, 15 % pending, 100 processing, the rest failed, over 8 types), starts
`lazyboss.py` on it and measures on loopback, as a browser with the page open
would ask:
  - GET / (the whole page, rendered on the server), p50 and p90 in ms, and its size;
  - GET / with If-None-Match when nothing changed (what the script asks every
    0.8 s), p50 in ms;
  - GET /?job=ID (the page with a job's details);
and, in-process, the part of a page that is counting jobs by type and status.
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import time
from pathlib import Path

from throughput import running_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import lazyboss  # noqa: E402

HTML = {"Accept": "text/html"}


def fill(db, total):
    store = lazyboss.Store(db, sync="normal")
    types = [f"type-{number}" for number in range(8)]
    batch = 10_000
    for start in range(0, total, batch):
        specs = [
            lazyboss.JobSpec(type=types[n % 8], parameters={"n": n}) for n in range(start, min(total, start + batch))
        ]
        store.submit_jobs(specs)
    with store.transaction() as db_:  # most of a big queue is history: done or failed, a few running
        db_.execute("UPDATE jobs SET status = 'done', finished_at = updated_at WHERE id % 20 < 16")
        db_.execute(
            "UPDATE jobs SET status = 'failed', finished_at = updated_at, error = '\"boom\"' WHERE id % 20 = 16"
        )
    for number in range(100):
        store.claim_next_job(f"worker-{number % 10}")
    started = time.perf_counter()
    for _ in range(5):
        store.count_jobs()
    count_ms = (time.perf_counter() - started) / 5 * 1000
    store.close()
    return count_ms


def timed(connection, path, headers, samples):
    durations, size, status = [], 0, None
    for _ in range(samples):
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        durations.append((time.perf_counter() - started) * 1000)
        size, status = len(body), response.status
    durations.sort()
    return {
        "status": status,
        "p50_ms": round(statistics.median(durations), 1),
        "p90_ms": round(durations[int(len(durations) * 0.9) - 1], 1),
        "bytes": size,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=20)
    args = parser.parse_args()
    results = []
    for total in args.jobs:
        with running_server("--sync", "normal") as (port, db):
            count_ms = fill(db, total)
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            whole = timed(connection, "/", HTML, args.samples)
            connection.request("GET", "/", headers=HTML)
            response = connection.getresponse()
            response.read()
            unchanged = timed(connection, "/", {**HTML, "If-None-Match": response.getheader("ETag")}, args.samples)
            detail = timed(connection, f"/?job={total // 2}", HTML, args.samples)
            results.append(
                {
                    "jobs": total,
                    "database_mib": round(os.path.getsize(db) / 2**20, 1),
                    "count_by_type_and_status_ms": round(count_ms, 1),
                    "page": whole,
                    "page_unchanged_304": unchanged,
                    "page_with_job": detail,
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
