#!/usr/bin/env python3
"""What followers of /events that read nothing cost the server during a burst of submits, printed as JSON.

    python bench/stalled_streams.py [--followers 20] [--jobs 60000] [--baseline OLD/lazyboss.py]

It starts `lazyboss.py` on a temporary database, opens --followers streams of
`/events` with a 4 KiB receive buffer that never read, submits --jobs small
jobs in batches of 1,000, and prints the server's resident memory and the
bytes of the temporary files waitress keeps unsent output in (deleted files
the process holds open), after every tenth of the jobs and 5 s after the last.
The followers are closed by the server's idle timeout (60 s) only later.
With --baseline it measures another lazyboss.py the same way afterwards.
"""

import argparse
import json
import os
import socket
import tempfile
import time

from throughput import LAZYBOSS, Client, start_server


def resident_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        return round(int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024, 1)


def temporary_file_mib(pid):
    """Bytes of the deleted files the process holds open (waitress's overflow buffers), in MiB."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith("(deleted)"):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:  # closed meanwhile
            pass
    return round(total / 2**20, 1)


def measure(program, followers, jobs):
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        process, port = start_server(
            "--db", os.path.join(folder, "bench.sqlite"), "--log-level", "warning", program=program
        )
        streams = []
        try:
            for _ in range(followers):
                stream = socket.socket()
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stream.connect(("127.0.0.1", port))
                stream.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
                streams.append(stream)
            client = Client(port)
            figures.append({"jobs": 0, "rss_mib": resident_mib(process.pid), "temporary_mib": 0.0})
            for batch in range(jobs // 1000):
                body = [{"type": "s", "parameters": {"n": batch * 1000 + n, "pad": "x" * 200}} for n in range(1000)]
                assert client.call("POST", "/jobs", body)[0] == 202
                if (batch + 1) % max(1, jobs // 10_000) == 0:
                    figures.append(
                        {
                            "jobs": (batch + 1) * 1000,
                            "rss_mib": resident_mib(process.pid),
                            "temporary_mib": temporary_file_mib(process.pid),
                        }
                    )
            time.sleep(5)
            figures.append(
                {
                    "5 s later": True,
                    "rss_mib": resident_mib(process.pid),
                    "temporary_mib": temporary_file_mib(process.pid),
                }
            )
        finally:
            for stream in streams:
                stream.close()
            process.terminate()
            process.wait(30)
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, default in (("--followers", 20), ("--jobs", 60_000)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--baseline", help="another lazyboss.py, measured the same way afterwards")
    args = parser.parse_args()
    programs = {"this": LAZYBOSS, **({"baseline": args.baseline} if args.baseline else {})}
    report = {"followers": args.followers, "jobs": args.jobs}
    report |= {name: measure(program, args.followers, args.jobs) for name, program in programs.items()}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
