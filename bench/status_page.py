#!/usr/bin/env python3
"""What the status page costs with a big queue, printed as JSON.

    python bench/status_page.py [--jobs 10000 100000 1000000] [--samples 20] [--browser]

For each size it fills a database with that many jobs (through the Store: 80 %
done, 15 % pending, 100 processing, the rest failed, over 8 types), starts
`lazyboss.py` on it and measures on loopback, as a browser with the page open
would ask:
  - GET / (the whole page, rendered on the server), p50 and p90 in ms, and its size;
  - GET / with If-None-Match when nothing changed (what the script asks every
    0.8 s), p50 in ms;
  - GET /?job=ID (the page with a job's details);
and, in-process, counting jobs by type and status: from the table the triggers
keep, and (what it cost before them) by scanning the jobs. Then what the
triggers cost: batches of 1,000 jobs into a store, and claim→result cycles,
with the triggers and with them dropped (on throwaway files, in turns).

With --browser it also measures, in Debian's chromium driven by Playwright (the
test-only tools of tests/test_status_browser.py), how soon an open page shows a
change: a job submitted (a job event), and a type paused (no job event: seen by
the page's look every 0.8 s); p50 and the largest, in ms from the API's answer.
"""

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from throughput import one_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
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
    scan = "SELECT type, status, COUNT(*) FROM jobs GROUP BY type, status"
    costs = {}
    for name, count in (
        ("count_from_job_counts_ms", store.count_jobs),
        ("count_by_scanning_jobs_ms", lambda: store.db.execute(scan).fetchall()),
    ):
        started = time.perf_counter()
        for _ in range(5):
            count()
        costs[name] = round((time.perf_counter() - started) / 5 * 1000, 1)
    store.close()
    return costs


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


def trigger_cost(rounds=5):
    """Batch submits (jobs/s) and claim→result cycles (ms) in-process, with the counting triggers and
    without, in alternating rounds (the median of each; `--sync normal`, so that fsync does not drown them)."""
    batches, cycles = {True: [], False: []}, {True: [], False: []}
    for triggers in [True, False] * rounds:
        with tempfile.TemporaryDirectory() as folder:
            store = lazyboss.Store(os.path.join(folder, "cost.sqlite"), sync="normal")
            if not triggers:
                store.db.executescript(
                    "DROP TRIGGER jobs_counted_in; DROP TRIGGER jobs_counted_on; DROP TRIGGER jobs_counted_out;"
                )
            for _ in range(10):
                specs = [lazyboss.JobSpec(type=f"t{n % 4}", parameters={"n": n}) for n in range(1000)]
                started = time.perf_counter()
                store.submit_jobs(specs)
                batches[triggers].append(time.perf_counter() - started)
            started = time.perf_counter()
            for _ in range(300):
                job = store.claim_next_job("w")
                store.complete_attempt(job["id"], job["attempt"], "w", None)
            cycles[triggers].append((time.perf_counter() - started) / 300)
            store.close()
    return {
        "with_triggers" if triggers else "without_triggers": {
            "batch_jobs_per_s": round(1000 / statistics.median(batches[triggers])),
            "claim_result_ms": round(statistics.median(cycles[triggers]) * 1000, 2),
        }
        for triggers in (True, False)
    }


def browser_latency(samples):
    """Milliseconds from an API answer to the change on an open page, for a job event and for a pause."""
    from playwright.sync_api import sync_playwright

    from test_status_browser import CHROMIUM, CHROMIUM_ARGS

    def submitted(n):
        return (
            "/jobs",
            "POST",
            {"type": "seen"},
            f"document.querySelector('#queue tfoot td:nth-child(2)')?.textContent === '{n}'",
        )

    def paused(n):
        word = "seen" if n % 2 else "none"
        return (
            "/types/seen",
            "PUT",
            {"paused": n % 2 == 1},
            f"document.getElementById('paused').textContent.includes('{word}')",
        )

    found = {}
    with one_server() as (port, db), sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(bypass_csp=True).new_page()  # wait_for_function evaluates its text
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('live').textContent === 'live'")
        api = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for name, change in (("submitted_job_ms", submitted), ("paused_type_ms", paused)):
            durations = []
            for n in range(1, samples + 1):
                path, method, body, shown = change(n)
                time.sleep(0.3)  # apart from the previous change's refreshes
                started = time.perf_counter()
                api.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
                api.getresponse().read()
                page.wait_for_function(shown, timeout=5000)
                durations.append((time.perf_counter() - started) * 1000)
            found[name] = {"p50": round(statistics.median(durations)), "max": round(max(durations))}
        browser.close()
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--browser", action="store_true", help="also measure how soon chromium shows a change")
    args = parser.parse_args()
    results = []
    for total in args.jobs:
        with one_server("--sync", "normal") as (port, db):
            counting = fill(db, total)
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
                    **counting,
                    "page": whole,
                    "page_unchanged_304": unchanged,
                    "page_with_job": detail,
                }
            )
            print(json.dumps(results[-1]), file=sys.stderr)
    results.append({"counting_triggers": trigger_cost()})
    if args.browser:
        results.append({"browser": browser_latency(args.samples)})
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
