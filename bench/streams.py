#!/usr/bin/env python3
"""Event delivery of a real lazyboss process, printed as JSON.

    python bench/streams.py [--events 2000] [--samples 200]

It starts `lazyboss.py` on a temporary database and measures, on loopback:
  - events/s delivered to 1 and to 100 followers of /events (each follower
    must receive every event; the rate counts events × followers per second),
  - submit→event latency on /events, p50/p99: a submit is sent, and the clock
    stops when a follower has the `submitted` event.
"""

import argparse
import json
import os
import socket
import statistics
import sys
import threading
import time

from throughput import Client, one_server


class Follower(threading.Thread):
    """Reads /events from a raw socket and counts `submitted` events; records when each arrived."""

    def __init__(self, port, expected):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        self.expected = expected
        self.seen = 0
        self.arrivals = []
        self.ready = threading.Event()

    def run(self):
        buffer = b""
        while self.seen < self.expected:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.ready.set()
            buffer += chunk
            count = buffer.count(b'"event":"submitted"')
            if count:
                now = time.perf_counter()
                self.seen += count
                self.arrivals += [now] * count
                buffer = buffer[buffer.rfind(b'"event":"submitted"') + 1 :]
        self.sock.close()


def open_followers(port, count, expected):
    followers = [Follower(port, expected) for _ in range(count)]
    for follower in followers:
        follower.start()
    for follower in followers:
        if not follower.ready.wait(10):  # the `retry:` line has come: the stream is open
            raise SystemExit("a follower did not connect")
    return followers


def delivery_rate(port, followers, events):
    readers = open_followers(port, followers, events)
    client = Client(port)
    started = time.perf_counter()
    for offset in range(0, events, 500):
        client.call("POST", "/jobs", [{"type": "fan"} for _ in range(min(500, events - offset))])
    for reader in readers:
        reader.join(120)
    elapsed = time.perf_counter() - started
    delivered = sum(reader.seen for reader in readers)
    if delivered < events * followers:
        raise SystemExit(f"only {delivered} of {events * followers} events arrived")
    return round(delivered / elapsed)


def latency(port, samples):
    (reader,) = open_followers(port, 1, samples)
    client = Client(port)
    latencies = []
    for n in range(samples):
        sent = time.perf_counter()
        client.call("POST", "/jobs", {"type": "ping"})
        while reader.seen <= n:
            time.sleep(0.0002)
        latencies.append((reader.arrivals[n] - sent) * 1000)
    latencies.sort()
    return {"p50_ms": round(statistics.median(latencies), 2), "p99_ms": round(latencies[int(samples * 0.99) - 1], 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=200)
    args = parser.parse_args()
    report = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    with one_server("--threads", "120") as (port, _):
        report["events_per_s_1_follower"] = delivery_rate(port, 1, args.events)
        report["events_per_s_100_followers"] = delivery_rate(port, 100, args.events)
        report["submit_to_event_latency"] = latency(port, args.samples)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
