#!/usr/bin/env python3
"""CPU time of the store's writes in-process (no HTTP), printed as JSON.

    python bench/store_writes.py [--baseline OLD_LAZYBOSS.py] [--rounds 5]

Each figure is the process CPU time (not the wall clock: other work on a
shared machine weighs on it far less) of, on a fresh SQLite file with
`synchronous=OFF` so that no fsync hides the statements:
  - single_submit_us:   `Store.submit_jobs` of one job (2,000 of them),
  - batch_jobs_per_s:   `Store.submit_jobs` of batches of 1,000 jobs,
  - cycle_us:           a claim of one job and its result report
                        (`claim_jobs`, `report_attempts`), 1,000 times,
  - wsgi_batch_jobs_per_s: a batch of 1,000 through the app's WSGI callable
                        (JSON in and out, no socket, no waitress).
With --baseline it measures another lazyboss.py the same way, the two taking
turns for --rounds rounds; each printed figure is the median of its rounds.
"""

import argparse
import importlib.util
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

LAZYBOSS = Path(__file__).resolve().parent.parent / "lazyboss.py"


def load(path, name):
    """lazyboss.py at `path` as a module of its own (two releases side by side)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def per_call(work, times):
    """CPU seconds per call of `work`."""
    started = time.process_time()
    for _ in range(times):
        work()
    return (time.process_time() - started) / times


def wsgi_post(app, body):
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/jobs",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    status = []
    b"".join(app(environ, lambda line, headers, exc_info=None: status.append(line)))
    assert status[0].startswith("202"), status


def measure(lazyboss):
    with tempfile.TemporaryDirectory() as folder:
        store = lazyboss.Store(os.path.join(folder, "bench.sqlite"), sync="normal")
        try:
            store.writer.execute("PRAGMA synchronous = OFF")
            one = [lazyboss.parse_job_spec({"type": "single", "parameters": {"n": 1}})]
            batch = [lazyboss.parse_job_spec({"type": "batch", "parameters": {"n": n}}) for n in range(1000)]
            store.submit_jobs(batch)  # warm: the statements compiled, the file grown
            figures = {
                "single_submit_us": per_call(lambda: store.submit_jobs(one), 2000) * 1e6,
                "batch_jobs_per_s": 1000 / per_call(lambda: store.submit_jobs(batch), 8),
            }
            store.submit_jobs([lazyboss.parse_job_spec({"type": "cycle", "parameters": {"n": n}}) for n in range(1100)])

            def cycle():
                (claim,) = store.claim_jobs("w1", ["cycle"])
                store.report_attempts("w1", [lazyboss._Report(claim.job, claim.attempt, "result", {"ok": True})])

            figures["cycle_us"] = per_call(cycle, 1000) * 1e6
            app = lazyboss.make_app(store)
            body = json.dumps([{"type": "wsgi", "parameters": {"n": n}} for n in range(1000)]).encode()
            wsgi_post(app, body)
            figures["wsgi_batch_jobs_per_s"] = 1000 / per_call(lambda: wsgi_post(app, body), 8)
        finally:
            store.close()
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="another lazyboss.py to measure the same way, in turns")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    programs = {"lazyboss": LAZYBOSS, **({"baseline": args.baseline} if args.baseline else {})}
    modules = {name: load(path, f"lazyboss_{name}") for name, path in programs.items()}
    rounds = {name: [] for name in modules}
    for _ in range(args.rounds):
        for name, module in modules.items():
            rounds[name].append(measure(module))
    report = {"load_average_at_start": os.getloadavg()[0], "rounds": args.rounds}
    for name, figures in rounds.items():
        report[name] = {key: round(statistics.median(each[key] for each in figures), 1) for key in figures[0]}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
