#!/usr/bin/env python3
"""What concurrency slots cost a claim, and what a blocked type's backlog costs the others, printed as JSON.

    python bench/concurrency_slots.py [--jobs 100000] [--claims 200]

A fresh database gets --jobs pending jobs of type `backup` (priority 5, so that
they come first in the queue) and 2,000 of type `mail`. Then, through
`Store.claim_jobs` and `Store.seconds_until_due` (what the HTTP claim and a
waiting long poll run, without the HTTP around them), with `--sync normal` so
that fsync does not hide the queries, in milliseconds (p50, p99):

  any_type_claim:   a claim of any type; it must pass over backup's backlog
                    when backup is blocked, and takes a mail job.
  typed_claim:      a claim of `--type backup --type mail`.
  waiting_look:     what a waiting worker of any type reads each time it looks
                    (woken by a change, or once a second): is anything claimable?
  cycle:            a claim and its result on a type of its own with a limit
                    of 1 (`limited`) or none (`free`): the slot's own cost.

for the backlog of backup `free` (no limit: the claims take backup's jobs),
`full` (concurrency 1, its slot taken) and `paused`.
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


def timed(call, times: int) -> dict:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        call()
        spent.append((time.perf_counter() - started) * 1000)
    spent.sort()
    return {"p50": round(statistics.median(spent), 3), "p99": round(spent[int(len(spent) * 0.99) - 1], 3)}


def fill(store: lazyboss.Store, jobs: int) -> None:
    for start in range(0, jobs, 1000):
        store.submit_jobs([lazyboss.JobSpec(type="backup", priority=5) for _ in range(min(1000, jobs - start))])
    store.submit_jobs([lazyboss.JobSpec(type="mail") for _ in range(2000)])


def backlog(mode: str, jobs: int, claims: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        store = lazyboss.Store(os.path.join(folder, "bench.sqlite"), sync="normal")
        fill(store, jobs)
        if mode == "full":
            store.put_type("backup", {"concurrency": 1})
            store.claim_jobs("holder", ["backup"])
        elif mode == "paused":
            store.put_type("backup", {"paused": 1})
        figures = {
            "any_type_claim": timed(lambda: store.claim_jobs("w"), claims),
            "typed_claim": timed(lambda: store.claim_jobs("w", ["backup", "mail"]), claims),
            "waiting_look": timed(lambda: store.seconds_until_due(None), claims),
        }
        store.close()
    return figures


def cycles(limit: int | None, claims: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        store = lazyboss.Store(os.path.join(folder, "bench.sqlite"), sync="normal")
        store.put_type("render", {"concurrency": limit})
        store.submit_jobs([lazyboss.JobSpec(type="render") for _ in range(claims)])

        def cycle() -> None:
            (claim,) = store.claim_jobs("w", ["render"])
            store.complete_attempt(claim.job, claim.attempt, "w", None)

        figures = timed(cycle, claims)
        store.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--claims", type=int, default=200)
    args = parser.parse_args()
    result = {mode: backlog(mode, args.jobs, args.claims) for mode in ("free", "full", "paused")}
    result["cycle"] = {"free": cycles(None, args.claims), "limited": cycles(1, args.claims)}
    print(json.dumps({"jobs": args.jobs, "claims": args.claims, **result}, indent=2))


if __name__ == "__main__":
    main()
