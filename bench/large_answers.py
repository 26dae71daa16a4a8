#!/usr/bin/env python3
"""Large jobs read by many clients at once: bytes sent, server CPU and memory, printed as JSON.

    python bench/large_answers.py [--megabytes 1] [--followers 28] [--seconds 10] [--jobs 60] [--readers 16]
                                  [--baseline OLD_LAZYBOSS.py] [--env NAME=VALUE ...]

It starts `lazyboss.py` (--threads 64, --max-body 2 MiB, --heartbeat 1) on a temporary database and measures:
  - firehose: --followers clients follow `/events` while one worker sends progress
    on a job with --megabytes of parameters as fast as it can for --seconds: how
    many progress reports went in, how many MiB the followers received, the
    server's CPU seconds and peak resident memory;
  - readers: --jobs jobs of --megabytes each, then --readers clients at once each
    reading `GET /jobs?limit=1000`, then as many replaying `/events` from
    `Last-Event-ID: 0`: the server's peak resident memory in each phase, and what it
    still holds once they are gone (what glibc's allocator keeps).
With --baseline it measures another lazyboss.py (main before a change, say) the
same way; --env sets a variable for the servers (MALLOC_ARENA_MAX=2, say).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from memory import reset_peak, rss_mib
from throughput import LAZYBOSS, Client, cpu_seconds, free_port, wait_for_health


def start(program, db, env):
    port = free_port()
    command = [sys.executable, str(program), "--db", db, "--port", str(port), "--log-level", "warning"]
    command += ["--threads", "64", "--max-body", str(2 << 20), "--heartbeat", "1"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env})
    wait_for_health(process, port)
    return process, port


def raw_get(port, path, headers, received, until=None):
    """GET on a raw socket; add the bytes read to `received` until the answer ends (or `until` says so)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{lines}\r\n".encode())
        total, tail, events = 0, b"", 0
        while data := sock.recv(1 << 20):
            total += len(data)
            events += (tail + data).count(b"\nid: ") - tail.count(b"\nid: ")
            tail = (tail + data)[-64:]
            if until is not None and until(tail, events):
                break
        received.append(total)


def in_threads(count, work, *args):
    threads = [threading.Thread(target=work, args=args) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def firehose(program, args, env):
    with tempfile.TemporaryDirectory() as folder:
        process, port = start(program, os.path.join(folder, "bench.sqlite"), env)
        try:
            client = Client(port)
            client.call("POST", "/jobs", {"type": "big", "parameters": {"blob": "x" * int(args.megabytes * 1e6)}})
            job = client.call("POST", "/jobs/attempt")[1]
            received, stop = [], threading.Event()
            followers = in_threads(
                args.followers,
                lambda: raw_get(port, "/events", {"Accept": "text/event-stream"}, received, lambda *_: stop.is_set()),
            )
            while client.call("GET", "/stats")[1]["open_streams"] < args.followers:
                time.sleep(0.05)
            reset_peak(process.pid)
            cpu, started, sent = cpu_seconds(process.pid), time.monotonic(), 0
            progress = f"/jobs/{job['id']}/attempts/{job['attempt']}/progress"
            while time.monotonic() - started < args.seconds:
                sent += 1
                client.connection.request(
                    "PUT",
                    progress,
                    body=f"id: {sent}\nevent: percent\ndata: {sent % 100}\n\n",
                    headers={"Authorization": "Bearer bench", "Content-Type": "text/event-stream"},
                )
                assert client.connection.getresponse().read()
            client.call("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/result", {})  # followers read on
            time.sleep(1)  # to let them take what was sent; then they hang up
            stop.set()
            for follower in followers:
                follower.join(60)
            return {
                "progress_reports": sent,
                "mib_received_by_followers": round(sum(received) / 2**20, 1),
                "server_cpu_seconds": round(cpu_seconds(process.pid) - cpu, 1),
                "server_peak_rss_mib": rss_mib(process.pid, "VmHWM"),
            }
        finally:
            process.terminate()
            process.wait(30)


def readers(program, args, env):
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        process, port = start(program, os.path.join(folder, "bench.sqlite"), env)
        try:
            client = Client(port)
            for _ in range(args.jobs):
                client.call("POST", "/jobs", {"type": "big", "parameters": {"blob": "x" * int(args.megabytes * 1e6)}})
            report["server_rss_mib_idle"] = rss_mib(process.pid, "VmRSS")
            phases = {
                "list_jobs": ("/jobs?limit=1000", {}, None),
                "events_replay": (
                    "/events",
                    {"Accept": "text/event-stream", "Last-Event-ID": "0"},
                    lambda tail, events: events >= args.jobs,  # every job's `submitted` came
                ),
            }
            for name, (path, headers, until) in phases.items():
                reset_peak(process.pid)
                received = []
                for reader in in_threads(args.readers, raw_get, port, path, headers, received, until):
                    reader.join(300)
                report[f"{name}_mib_each"] = round(max(received) / 2**20, 1)
                report[f"{name}_server_peak_rss_mib"] = rss_mib(process.pid, "VmHWM")
                time.sleep(2)  # the streams notice their clients left
                report[f"{name}_server_rss_mib_after"] = rss_mib(process.pid, "VmRSS")
        finally:
            process.terminate()
            process.wait(30)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--followers", type=int, default=28)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--baseline", type=Path, help="another lazyboss.py to measure the same way")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the servers")
    args = parser.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    programs = {"lazyboss": LAZYBOSS, **({"baseline": args.baseline} if args.baseline else {})}
    report = {"settings": {key: value for key, value in vars(args).items() if key != "baseline"}}
    for name, program in programs.items():
        report[name] = {"firehose": firehose(program, args, env), "readers": readers(program, args, env)}
        print(json.dumps({name: report[name]}), file=sys.stderr, flush=True)  # as it comes: a run is long
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
