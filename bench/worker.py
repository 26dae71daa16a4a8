#!/usr/bin/env python3
"""The workers' throughput and overhead, printed as JSON.

    python bench/worker.py [--jobs 400]

It starts `lazyboss.py` on a temporary database for each run, then `lazyboss work` running
`true` (the shell worker) and `lazyboss work --python` running a no-op
function (the Python worker), each once with -c 1 and once with -c 4,
submits --jobs jobs in one batch and measures:
  - jobs/s from the submit until the last job is done,
  - the worker's own overhead per job, p50/p99: from the claim (the
    attempt's started_at) to the report (finished_at), minus the command's
    own run time as the worker measured it (duration_s; none for a function).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from throughput import ROOT, Client, one_server


def seconds(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


NOOP_WORKER = (
    "import lazyboss\n\nworker = lazyboss.Worker()\n\n\n@worker.task('noop')\ndef noop(params, job):\n    pass\n"
)


def run(port, concurrency, jobs, python=False):
    job_type = f"{'py' if python else 'sh'}{concurrency}"
    how = ["--python", "noop:worker", "--type", job_type] if python else ["--type", job_type, "--", "true"]
    with tempfile.TemporaryDirectory() as directory:
        Path(directory, "noop.py").write_text(NOOP_WORKER.replace("'noop'", f"'{job_type}'"))
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "lazyboss.py"), "--log-level", "warning", "work"]
            + ["--server", f"http://127.0.0.1:{port}", "-c", str(concurrency), *how],
            stdin=subprocess.DEVNULL,
            cwd=directory,
        )
        client = Client(port)
        try:
            time.sleep(1)  # let the worker start and begin its long polls
            started = time.perf_counter()
            _, submitted = client.call("POST", "/jobs", [{"type": job_type} for _ in range(jobs)])
            while client.call("GET", "/stats")[1]["jobs_by_type"][job_type].get("done", 0) < jobs:
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            worker.terminate()
            worker.wait(30)
    overheads = []
    for job in submitted:
        (attempt,) = client.call("GET", f"/jobs/{job['id']}/attempts")[1]
        run_time = 0 if python else attempt["result"]["duration_s"]
        overheads.append((seconds(attempt["finished_at"]) - seconds(attempt["started_at"]) - run_time) * 1000)
    overheads.sort()
    return {
        "jobs_per_s": round(jobs / elapsed, 1),
        "overhead_p50_ms": round(statistics.median(overheads), 1),
        "overhead_p99_ms": round(overheads[int(len(overheads) * 0.99) - 1], 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=400)
    args = parser.parse_args()
    report = {"cores": os.cpu_count(), "python": sys.version.split()[0]}
    for python in (False, True):
        for concurrency in (1, 4):
            with one_server() as (port, _):  # each on a fresh file, so that none pays for another's jobs
                report[f"{'python' if python else 'shell'}_c{concurrency}"] = run(port, concurrency, args.jobs, python)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
