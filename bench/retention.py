#!/usr/bin/env python3
"""Does the database stop growing under steady load? Printed as JSON.

    python bench/retention.py [--seconds 60] [--retain 5s] [--workers 4]

It starts `lazyboss.py` with a short `--retain` and a fast reaper, then runs
jobs through their whole life as fast as the workers can (submit, claim, two
progress reports with a log chunk, result) for --seconds: at ~250 jobs/s,
a minute holds what a host doing 4 jobs/s does in an hour. Every second it
samples the size of the database file and its WAL, and prints the largest
and the last sizes, with what was processed.
"""

import argparse
import json
import os
import sys
import threading
import time

from throughput import Client, one_server


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--retain", default="5s")
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    with one_server("--retain", args.retain, "--reap-interval", "0.2") as (port, db):
        done = [0] * args.workers
        stop = time.monotonic() + args.seconds

        def work(index):
            client = Client(port, user=f"w{index}")
            progress_headers = {**client.headers, "Content-Type": "text/event-stream"}
            while time.monotonic() < stop:
                client.call("POST", "/jobs", {"type": "steady", "parameters": {"n": done[index]}})
                status, job = client.call("POST", "/jobs/attempt?type=steady")
                if status != 201:
                    continue
                path = f"/jobs/{job['id']}/attempts/{job['attempt']}"
                for body in ("id: 1\ndata: working on it\n\n", "id: 2\nevent: percent\ndata: 50\n\n"):
                    client.connection.request("PUT", f"{path}/progress", body=body, headers=progress_headers)
                    client.connection.getresponse().read()
                client.call("PUT", f"{path}/result", {"ok": True})
                done[index] += 1

        samples = []
        threads = [threading.Thread(target=work, args=(index,)) for index in range(args.workers)]
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            sizes = {
                name: os.path.getsize(path) if os.path.exists(path) else 0
                for name, path in (("database", db), ("wal", db + "-wal"))
            }
            samples.append(sizes)
            time.sleep(1)
        for thread in threads:
            thread.join()
        kept = Client(port).call("GET", "/stats")[1]["jobs"]
    report = {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "seconds": args.seconds,
        "retain": args.retain,
        "jobs_processed": sum(done),
        "jobs_per_s": round(sum(done) / args.seconds),
        "jobs_kept_at_end": kept,
        "max_database_mib": round(max(s["database"] for s in samples) / 2**20, 2),
        "max_wal_mib": round(max(s["wal"] for s in samples) / 2**20, 2),
        "last_database_mib": round(samples[-1]["database"] / 2**20, 2),
        "database_mib_at_half_time": round(samples[len(samples) // 2]["database"] / 2**20, 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
