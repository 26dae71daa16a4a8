#!/usr/bin/env python3
"""Server memory and database growth with large jobs, printed as JSON.

    python bench/memory.py [--jobs 100] [--megabytes 1] [--reports 100]

It starts `lazyboss.py` (with --max-body 2 MiB) on a temporary database,
submits --jobs jobs with --megabytes of parameters each, and measures:
  - the database's size (pages in use, WAL included) after the submits, and
    what --reports progress reports of 8 bytes on one of those jobs add;
  - the server's peak resident memory (VmHWM, reset before each phase) while
    a client reads `GET /jobs?limit=--jobs`, and while another replays
    `/events` from `Last-Event-ID: 0` to its last event.
"""

import argparse
import http.client
import json
import os
import sqlite3
import tempfile

from throughput import Client, start_server


def rss_mib(pid, field):
    """VmRSS (resident now) or VmHWM (its peak) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(f"{field}:"))
    return round(int(line.split()[1]) / 1024, 1)


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current RSS (Linux 4.0 and later)


def database_bytes(db):
    """Bytes of the pages in use, as a reader sees the file and its WAL now."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as check:
        pages = check.execute("PRAGMA page_count").fetchone()[0] - check.execute("PRAGMA freelist_count").fetchone()[0]
        return pages * check.execute("PRAGMA page_size").fetchone()[0]


def read_all(port, path, headers, until=None):
    """Read a response to its end (or, for a stream, until `until` events came); return its bytes."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request("GET", path, headers={"Authorization": "Bearer bench", **headers})
    response = connection.getresponse()
    received, events = 0, 0
    while until is None or events < until:
        line = response.readline()
        if not line:
            break
        received += len(line)
        events += line.startswith(b"id: ")
    connection.close()
    return received


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--reports", type=int, default=100)
    args = parser.parse_args()
    blob = "x" * int(args.megabytes * 1_000_000)
    report = {"jobs": args.jobs, "parameters_mb": args.megabytes}
    with tempfile.TemporaryDirectory() as folder:
        db = os.path.join(folder, "bench.sqlite")
        process, port = start_server("--db", db, "--log-level", "warning", "--max-body", str(2 << 20))
        try:
            client = Client(port)
            for _ in range(args.jobs):
                assert client.call("POST", "/jobs", {"type": "big", "parameters": {"blob": blob}})[0] == 202
            report["database_mib_after_submits"] = round(database_bytes(db) / 2**20, 1)
            status, job = client.call("POST", "/jobs/attempt")
            assert status == 201
            before = database_bytes(db)
            progress = f"/jobs/{job['id']}/attempts/{job['attempt']}/progress"
            for number in range(args.reports):
                client.connection.request(
                    "PUT",
                    progress,
                    body=f"id: {number + 1}\ndata: 8 bytes\n\n",
                    headers={"Authorization": "Bearer bench", "Content-Type": "text/event-stream"},
                )
                assert client.connection.getresponse().read()
            added = database_bytes(db) - before
            report[f"database_kib_added_by_{args.reports}_progress_reports"] = round(added / 1024, 1)

            report["server_rss_mib_before_list_jobs"] = rss_mib(process.pid, "VmRSS")
            reset_peak(process.pid)
            size = read_all(port, f"/jobs?limit={args.jobs}", {})
            report["list_jobs_response_mib"] = round(size / 2**20, 1)
            report["server_peak_rss_mib_list_jobs"] = rss_mib(process.pid, "VmHWM")

            report["server_rss_mib_before_events_replay"] = rss_mib(process.pid, "VmRSS")
            reset_peak(process.pid)
            events = args.jobs + 1 + args.reports
            size = read_all(port, "/events", {"Accept": "text/event-stream", "Last-Event-ID": "0"}, until=events)
            report["events_replay_mib"] = round(size / 2**20, 1)
            report["server_peak_rss_mib_events_replay"] = rss_mib(process.pid, "VmHWM")
        finally:
            process.terminate()
            process.wait(30)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
