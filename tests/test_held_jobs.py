"""Held jobs: submitted with "hold": true, never claimed, released by hand (and waited for), cancelled from held."""

import json
import sqlite3
import threading

import pytest

import lazyboss
from support import run_cli, submit

HTML = {"Accept": "text/html"}


def held(app, job_type="report", **fields):
    return app.post_json("/jobs", {"type": job_type, "hold": True, **fields}, status=202).json


def counted_by_scan(store):
    rows = store.db.execute("SELECT type, status, COUNT(*) FROM jobs GROUP BY 1, 2").fetchall()
    counts = {}
    for job_type, status, number in rows:
        counts.setdefault(job_type, {})[status] = number
    return counts


def test_a_held_job_is_stored_held_and_never_claimed(app):
    job = held(app, delay=0)
    assert job["status"] == "held"
    assert app.post("/jobs/attempt", status=204).status_int == 204
    assert app.post("/jobs/attempt?type=report", status=204).status_int == 204
    assert app.get(f"/jobs/{job['id']}").json["status"] == "held"


def test_held_shows_in_lists_counts_types_stats_and_metrics(app, store):
    job = held(app)
    app.post_json("/jobs", {"type": "report"}, status=202)
    assert [listed["id"] for listed in app.get("/jobs?status=held").json["jobs"]] == [job["id"]]
    assert app.get("/types/report").json["jobs"] == {
        "held": 1,
        "pending": 1,
        "processing": 0,
        "done": 0,
        "failed": 0,
        "cancelled": 0,
    }
    stats = app.get("/stats").json
    assert stats["jobs"]["held"] == 1 and stats["jobs_by_type"]["report"] == {"held": 1, "pending": 1}
    assert 'lazyboss_jobs{type="report",status="held"} 1' in app.get("/metrics").text
    assert counted_by_scan(store) == {"report": {"held": 1, "pending": 1}}


def test_release_makes_it_pending_now_and_claimable(app, clock):
    job = held(app, delay=3600)
    clock.advance(5)
    released = app.post(f"/jobs/{job['id']}/release").json
    assert released["status"] == "pending" and released["run_at"] == lazyboss.rfc3339(clock.now)
    claimed = app.post("/jobs/attempt?type=report", status=201).json
    assert claimed["id"] == job["id"]


def test_release_refuses_what_is_not_held_and_changes_nothing(app, store):
    pending = app.post_json("/jobs", {"type": "report"}, status=202).json
    refused = app.post(f"/jobs/{pending['id']}/release", status=409).json
    assert refused["error"] == "conflict" and "only held jobs can be released" in refused["detail"]
    assert app.post("/jobs/99/release", status=404).json["error"] == "not_found"
    job = held(app)
    assert app.post(f"/jobs/{job['id']}/release?wait=soon", status=422).json["error"] == "invalid"
    assert app.get(f"/jobs/{job['id']}").json["status"] == "held"
    bad = app.post_json("/jobs", {"type": "report", "hold": "yes"}, status=422).json
    assert "'hold' must be true or false" in bad["detail"]
    assert counted_by_scan(store) == {"report": {"pending": 1, "held": 1}}


def test_cancel_works_from_held_and_retry_then_makes_it_pending(app):
    job = held(app)
    assert app.post(f"/jobs/{job['id']}/cancel").json["status"] == "cancelled"
    assert app.post(f"/jobs/{job['id']}/release", status=409).json["error"] == "conflict"
    assert app.post(f"/jobs/{job['id']}/retry").json["status"] == "pending"


def test_a_batch_may_hold_some_of_its_jobs(app):
    jobs = app.post_json("/jobs", [{"type": "a", "hold": True}, {"type": "a"}], status=202).json
    assert [job["status"] for job in jobs] == ["held", "pending"]
    assert app.post("/jobs/attempt", status=201).json["id"] == jobs[1]["id"]
    assert app.post("/jobs/attempt", status=204)


def test_the_release_is_an_event_of_its_own(app, store):
    job = held(app)
    app.post(f"/jobs/{job['id']}/release")
    kinds = [row[0] for row in store.db.execute("SELECT kind FROM events WHERE job_id = ? ORDER BY id", (job["id"],))]
    assert kinds == ["submitted", "unheld"]
    assert store.counters[("jobs_released", "report")] == 1
    assert 'lazyboss_jobs_released_total{type="report"} 1' in app.get("/metrics").text


def test_counting_triggers_count_held_through_every_change(app, store):
    jobs = [held(app, job_type) for job_type in ("a", "a", "b", "a")]
    app.post(f"/jobs/{jobs[0]['id']}/release")
    app.post(f"/jobs/{jobs[1]['id']}/cancel")
    app.post(f"/jobs/{jobs[1]['id']}/retry")
    app.post(f"/jobs/{jobs[2]['id']}/cancel")
    assert store.count_jobs() == counted_by_scan(store) == {"a": {"pending": 2, "held": 1}, "b": {"cancelled": 1}}


def test_the_status_page_counts_held_jobs_and_offers_their_release(app):
    job = held(app)
    page = app.get("/", headers=HTML)
    headings = [cell.get_text(strip=True) for cell in page.html.select("#queue thead th")]
    assert headings[:3] == ["type", "held", "pending"]
    assert page.html.select_one("#queue tbody td.num .held").get_text() == "1"
    detail = app.get(f"/?job={job['id']}", headers=HTML)
    buttons = {button["data-label"]: button["data-url"] for button in detail.html.select("#job button")}
    path = f"/jobs/{job['id']}"
    assert buttons == {f"Release job {job['id']}": f"{path}/release", f"Cancel job {job['id']}": f"{path}/cancel"}


def test_an_older_file_learns_held_and_keeps_its_jobs_attempts_and_counts(db_path):
    with sqlite3.connect(db_path) as db:
        for migration in lazyboss._MIGRATIONS[:7]:
            migration(db) if callable(migration) else db.executescript(migration)
        db.execute("PRAGMA user_version = 7")
        db.execute(
            """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                   backoff_base, backoff_max, created_at, updated_at, attempts, attempt, assignee)
               VALUES ('old', 'processing', '{}', 0, 0, 3, 300, 1, 600, 0, 0, 1, 1, 'w1')"""
        )
        db.execute("INSERT INTO attempts (job_id, id, worker, status, started_at) VALUES (1, 1, 'w1', 'processing', 0)")
    store = lazyboss.Store(db_path)
    try:
        (view,) = store.submit_jobs([lazyboss.JobSpec(type="old", hold=True)])
        assert json.loads(view)["status"] == "held"
        assert store.list_attempts("1")[0]["worker"] == "w1"
        assert store.count_jobs() == {"old": {"processing": 1, "held": 1}}
        with pytest.raises(sqlite3.IntegrityError):  # the constraint was widened, not dropped
            with store.transaction() as db:
                db.execute("UPDATE jobs SET status = 'lost' WHERE id = 1")
    finally:
        store.close()
    with sqlite3.connect(db_path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- across the wire


def test_release_with_wait_answers_with_the_finished_job(live):
    client = live.client()
    job = client.request("POST", "/jobs", {"type": "report", "hold": True}).json

    def work():
        worker = live.client(user="w1:")
        claimed = worker.request("POST", "/jobs/attempt?type=report&wait=10").json
        worker.request("PUT", f"/jobs/{claimed['id']}/attempts/{claimed['attempt']}/result", {"rows": 3})

    worker = threading.Thread(target=work)
    worker.start()
    answer = client.request("POST", f"/jobs/{job['id']}/release?wait=10")
    worker.join(10)
    assert answer.status == 200
    assert answer.json["status"] == "done" and answer.json["result"] == {"rows": 3}


def test_release_with_wait_that_runs_out_answers_202_with_the_job_as_it_is(live):
    client = live.client()
    job = client.request("POST", "/jobs", {"type": "nobody-works-on-this", "hold": True}).json
    answer = client.request("POST", f"/jobs/{job['id']}/release?wait=0.3")
    assert answer.status == 202 and answer.headers["Location"] == f"/jobs/{job['id']}"
    assert answer.json["status"] == "pending"


def test_the_command_line_holds_lists_and_releases_with_wait(server, start_worker):
    submitted = run_cli("submit", "report", '{"n": 2}', "--hold", "--server", server.url)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    listing = run_cli("jobs", "--status", "held", "--json", "--server", server.url)
    assert [job["id"] for job in json.loads(listing.stdout)] == [job_id]
    start_worker("--type", "report", "--json-result", command=["sh", "-c", "echo '{\"made\": true}'"])
    released = run_cli("release", job_id, "--wait", "--server", server.url)
    assert released.returncode == 0, released.stderr
    assert json.loads(released.stdout) == {"made": True}
    assert f"job {job_id}: pending" in released.stderr
    again = run_cli("release", job_id, "--server", server.url)
    assert again.returncode == 3 and "only held jobs can be released" in again.stderr


def test_the_command_line_cancels_a_held_job(server):
    job_id = submit(server, "report", hold=True)
    cancelled = run_cli("cancel", job_id, "--server", server.url)
    assert cancelled.returncode == 0 and cancelled.stdout.strip() == f"job {job_id}: cancelled"
    assert server.client().request("GET", f"/jobs/{job_id}").json["status"] == "cancelled"
