#!/usr/bin/env python3
"""What waiting workers cost the server while only a paused type has due jobs, printed as JSON.

    python bench/idle_waiters.py [--waiters 10] [--seconds 10]

It starts `lazyboss.py` on a temporary database, pauses the type `slow`,
submits one job of it (due at once, but not claimable), then keeps --waiters
long polls waiting (`wait=60`, half of them for any type, half for `slow`
and another type) and reads the server's CPU time from /proc over --seconds.
"""

import argparse
import json
import os
import tempfile
import threading
import time

from throughput import Client, cpu_seconds, start_server


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        process, port = start_server("--db", os.path.join(folder, "bench.sqlite"), "--log-level", "warning")
        try:
            admin = Client(port)
            admin.call("PUT", "/types/slow", {"paused": True})
            admin.call("POST", "/jobs", {"type": "slow"})
            stop = threading.Event()

            def wait(index):
                client = Client(port, user=f"waiter-{index}")
                body = {"wait": 60} if index % 2 else {"wait": 60, "types": ["slow", "other"]}
                while not stop.is_set():
                    client.call("POST", "/jobs/attempt", body)

            for index in range(args.waiters):
                threading.Thread(target=wait, args=(index,), daemon=True).start()
            while admin.call("GET", "/stats")[1]["waiting_workers"] < args.waiters:
                time.sleep(0.05)
            before, started = cpu_seconds(process.pid), time.monotonic()
            time.sleep(args.seconds)
            used, elapsed = cpu_seconds(process.pid) - before, time.monotonic() - started
            still_pending = admin.call("GET", "/jobs/1")[1]["status"] == "pending"
            stop.set()
        finally:
            process.terminate()
            process.wait(30)
    report = {
        "waiters": args.waiters,
        "seconds": round(elapsed, 1),
        "server_cpu_seconds": round(used, 2),
        "server_cpu_percent_of_one_core": round(100 * used / elapsed, 1),
        "paused_job_still_pending": still_pending,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
