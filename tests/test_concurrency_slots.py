"""Concurrency slots: PUT /types/T {"concurrency": N} lets at most N jobs of T be processing at once, whoever
claims them, through expiring leases, batch claims and a second server process on the same file."""

import base64
import json
import sqlite3
import threading
import time
from contextlib import closing

import pytest

import lazyboss
from support import ServerProcess, run_cli, wait_until

WORKER = {"Authorization": "Basic " + base64.b64encode(b"w1:").decode()}


def most_at_once(db, job_type):
    """The most attempts of a type that were running at one moment, from the attempts' own times."""
    spans = db.execute(
        """SELECT attempts.started_at, attempts.finished_at FROM attempts
           JOIN jobs ON jobs.id = attempts.job_id WHERE jobs.type = ?""",
        (job_type,),
    ).fetchall()
    # At the same instant an end comes before a start: a slot freed and taken again at once is one.
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans if end is not None])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def claim(app, query="", status=201):
    return app.post(f"/jobs/attempt{query}", headers=WORKER, status=status)


def finish(app, job):
    app.put_json(f"/jobs/{job['id']}/attempts/{job['attempt']}/result", {}, headers=WORKER, status=201)


# -- the setting


def test_concurrency_is_a_type_setting_shown_in_types_stats_metrics_and_versions(app):
    view = app.put_json("/types/render", {"concurrency": 2}).json
    assert view["concurrency"] == 2 and view["settings"] == {"concurrency": 2}
    assert [kind["concurrency"] for kind in app.get("/types").json] == [2]
    assert app.get("/stats").json["concurrency_limits"] == {"render": 2}
    assert 'lazyboss_concurrency_limit{type="render"} 2' in app.get("/metrics").text
    assert app.get("/types/render/versions").json["versions"][-1]["changed"] == ["concurrency"]
    assert app.put_json("/types/render", {"concurrency": None}).json["concurrency"] is None
    assert "lazyboss_concurrency_limit{" not in app.get("/metrics").text
    assert app.get("/stats").json["concurrency_limits"] == {}


@pytest.mark.parametrize("bad", [0, -1, "2", 2.5, True, 100_001])
def test_a_bad_limit_is_refused_and_changes_nothing(app, bad):
    app.put_json("/types/render", {"concurrency": 3})
    refused = app.put_json("/types/render", {"concurrency": bad}, status=422).json
    assert "'concurrency' must be an integer from 1 to 100000" in refused["detail"]
    assert app.get("/types/render").json["concurrency"] == 3


# -- claims


def test_a_claim_skips_a_full_type_until_a_slot_frees(app):
    app.put_json("/types/render", {"concurrency": 1})
    first, second = app.post_json("/jobs", [{"type": "render", "priority": 5}] * 2, status=202).json
    mail = app.post_json("/jobs", {"type": "mail"}, status=202).json
    running = claim(app).json
    assert running["id"] == first["id"]
    assert claim(app).json["id"] == mail["id"]  # render is full, though its job is more urgent
    claim(app, status=204)
    claim(app, "?type=render", status=204)
    finish(app, running)
    assert claim(app).json["id"] == second["id"]


def test_a_batch_claim_takes_no_more_of_a_type_than_its_free_slots(app, store):
    app.put_json("/types/render", {"concurrency": 2})
    app.post_json("/jobs", [{"type": "render", "priority": 9}] * 5 + [{"type": "mail"}] * 3, status=202)
    # The four most urgent are render's: two of them go, and the claim looks again for what else it may take.
    jobs = claim(app, "?max=4").json["jobs"]
    assert [job["type"] for job in jobs] == ["render", "render", "mail", "mail"]
    assert [job["type"] for job in claim(app, "?max=10").json["jobs"]] == ["mail"]
    claim(app, "?max=10", status=204)
    app.post(f"/jobs/{jobs[0]['id']}/cancel")
    assert [job["type"] for job in claim(app, "?max=10").json["jobs"]] == ["render"]
    assert store.count_jobs()["render"] == {"pending": 2, "processing": 2, "cancelled": 1}


def test_the_status_page_shows_the_limit(app):
    app.put_json("/types/render", {"concurrency": 3})
    page = app.get("/", headers={"Accept": "text/html"})
    assert page.html.select_one("#queue tbody tr .badge.slots").get_text() == "at most 3 at once"


def test_a_limit_lowered_below_the_running_jobs_stops_claims_until_they_end(app):
    app.post_json("/jobs", [{"type": "render"}] * 4, status=202)
    running = claim(app, "?max=3").json["jobs"]
    app.put_json("/types/render", {"concurrency": 2})
    claim(app, status=204)
    finish(app, running[0])
    claim(app, status=204)  # still two running: the limit
    finish(app, running[1])
    assert claim(app).status_int == 201


# -- waking waiting workers


FREEING = ["result", "error", "cancel", "expiry", "limit raised", "limit removed"]


@pytest.mark.parametrize("how", FREEING)
def test_a_freed_slot_wakes_a_waiting_worker_at_once(live, how):
    admin = live.client()
    admin.request("PUT", "/types/render", {"concurrency": 1})
    timeout = 0.5 if how == "expiry" else 60
    admin.request("POST", "/jobs", [{"type": "render", "max_attempts": 1, "timeout": timeout}] * 2)
    holder = live.client(user="holder:")
    running = holder.request("POST", "/jobs/attempt?type=render").json
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            (live.client(user="waiter:").request("POST", "/jobs/attempt?type=render&wait=20"), time.monotonic())
        )
    )
    waiter.start()
    wait_until(lambda: admin.request("GET", "/stats").json["waiting_workers"] == 1, what="the waiting worker")
    time.sleep(0.2)  # it has looked and found the type full: now only a wake-up (or its 1 s look) ends the wait
    assert not answers
    path = f"/jobs/{running['id']}/attempts/{running['attempt']}"
    freed_at = time.monotonic()
    if how == "result":
        holder.request("PUT", f"{path}/result", {})
    elif how == "error":
        holder.request("PUT", f"{path}/error", {})
    elif how == "cancel":
        admin.request("POST", f"/jobs/{running['id']}/cancel")
    elif how == "expiry":
        freed_at += 0.5  # when the lease runs out; the reaper (every 0.05 s) then ends the attempt
    elif how == "limit raised":
        admin.request("PUT", "/types/render", {"concurrency": 2})
    else:
        admin.request("PUT", "/types/render", {"concurrency": None})
    waiter.join(10)
    answer, answered_at = answers[0]
    assert answer.status == 201 and answer.json["id"] != running["id"]
    assert answered_at - freed_at < 0.5  # not its next look at the file, a second later


# -- "one at a time" under load


def claim_and_work(client, job_type, batch, forget_first_attempts, wait):
    """A worker: claim (long polling `wait` seconds, or again and again), work 20 ms, report; until no
    job came for a second."""
    query = f"?type={job_type}&wait={wait}" + (f"&max={batch}" if batch else "")
    last_job = time.monotonic()
    while time.monotonic() - last_job < 1:
        answer = client.request("POST", f"/jobs/attempt{query}")
        if answer.status == 204:
            time.sleep(0.005)
            continue
        last_job = time.monotonic()
        for job in answer.json["jobs"] if batch else [answer.json]:
            time.sleep(0.02)
            if forget_first_attempts and job["attempts"] == 1:
                continue  # a worker that died: the lease runs out, and the slot with it
            client.request("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/result", {"by": job["assignee"]})


def run_workers(clients, job_type, batch=None, forget_first_attempts=False, wait=1):
    threads = [
        threading.Thread(target=claim_and_work, args=(client, job_type, batch, forget_first_attempts, wait))
        for client in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert not any(thread.is_alive() for thread in threads)


@pytest.mark.parametrize(("limit", "batch"), [(1, None), (1, 4), (2, 3)])
def test_the_limit_holds_under_eight_concurrent_claimers(live, limit, batch):
    admin = live.client()
    admin.request("PUT", "/types/render", {"concurrency": limit})
    admin.request("POST", "/jobs", [{"type": "render", "parameters": {"n": n}} for n in range(24)])
    run_workers([live.client(user=f"w{n}:") for n in range(8)], "render", batch)
    assert live.store.count_jobs()["render"] == {"done": 24}
    assert most_at_once(live.store.db, "render") == limit


def test_the_limit_holds_when_leases_expire(live):
    admin = live.client()
    admin.request("PUT", "/types/render", {"concurrency": 1, "backoff": {"base": 0.01, "max": 0.05}})
    admin.request("POST", "/jobs", [{"type": "render", "timeout": 0.2} for _ in range(8)])
    run_workers([live.client(user=f"w{n}:") for n in range(8)], "render", forget_first_attempts=True)
    assert live.store.count_jobs()["render"] == {"done": 8}
    assert live.store.db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'expired'").fetchone()[0] == 8
    assert most_at_once(live.store.db, "render") == 1


def test_the_limit_holds_with_a_second_server_process_on_the_file(live, database):
    other = ServerProcess(database, "--reap-interval", "0.05")
    try:
        admin = live.client()
        admin.request("PUT", "/types/render", {"concurrency": 1})
        admin.request("POST", "/jobs", [{"type": "render", "parameters": {"n": n}} for n in range(20)])
        here, there = live.client(user="here:"), other.client(user="there:")
        # Each process hands a job out, one after the other: the other's claim waits for the slot.
        first = here.request("POST", "/jobs/attempt?type=render").json
        assert there.request("POST", "/jobs/attempt?type=render&wait=0").status == 204
        here.request("PUT", f"/jobs/{first['id']}/attempts/{first['attempt']}/result", {})
        second = there.request("POST", "/jobs/attempt?type=render&wait=5").json
        there.request("PUT", f"/jobs/{second['id']}/attempts/{second['attempt']}/result", {})
        clients = [live.client(user=f"here{n}:") for n in range(4)] + [
            other.client(user=f"there{n}:") for n in range(4)
        ]
        # Claims without waiting: a waiting worker of one process hears of another's freed slot only at
        # its next look at the file, so with long polls each process would mostly pass jobs to its own.
        run_workers(clients, "render", batch=2, wait=0)
    finally:
        other.stop()
    assert live.store.count_jobs()["render"] == {"done": 20}
    workers = {row[0][:4] for row in live.store.db.execute("SELECT worker FROM attempts")}
    assert workers == {"here", "ther"}
    assert most_at_once(live.store.db, "render") == 1


# -- the command line


def test_shell_workers_run_a_limited_type_one_at_a_time(server, start_worker, tmp_path):
    declared = tmp_path / "types.json"
    declared.write_text(json.dumps({"types": {"render": {"concurrency": 1}}}))
    applied = run_cli("apply", str(declared), "--server", server.url)
    assert applied.returncode == 0, applied.stderr
    listed = run_cli("types", "--server", server.url)
    assert listed.stdout.splitlines()[0].split()[:3] == ["TYPE", "PAUSED", "CONCURRENCY"]
    assert listed.stdout.splitlines()[1].split()[:2] == ["render", "1"]
    server.client().request("POST", "/jobs", [{"type": "render"}] * 6)
    for _ in range(2):
        start_worker("--type", "render", "-c", "3", command=["sleep", "0.1"])
    client = server.client()

    def all_done():
        return client.request("GET", "/types/render").json["jobs"]["done"] == 6

    wait_until(all_done, timeout=30, what="six jobs done")
    with closing(sqlite3.connect(tmp_path / "cli.sqlite")) as db:
        assert most_at_once(db, "render") == 1


@pytest.mark.sqlite_only  # its query plan is SQLite's
def test_a_blocked_types_backlog_is_not_read_by_the_claims_of_others(store):
    store.submit_jobs([lazyboss.JobSpec(type=kind) for kind in ("backup", "backup", "mail", "report", "sms")])
    store.put_type("backup", {"concurrency": 1})
    store.claim_jobs("w", ["backup"])
    store.put_type("report", {"paused": 1})
    # A claim of any type names the types that may hand jobs out, each read through its own index.
    assert sorted(store._types_to_read(store.db, None)) == ["mail", "sms"]
    assert store._types_to_read(store.db, ["backup", "report", "sms"]) == ["sms"]
    assert store._types_to_read(store.db, ["backup"]) == []
    store.put_type("backup", {"concurrency": None})
    store.put_type("report", {"paused": 0})
    assert store._types_to_read(store.db, None) is None  # nothing blocked: the queue's own index, whole
    query, parameters = store.engine.next_jobs(["mail", "sms"], {}, store.clock(), 1)
    plan = [row[3] for row in store.db.execute(f"EXPLAIN QUERY PLAN {query}", parameters)]
    assert not [step for step in plan if step.startswith("SCAN jobs")], plan
