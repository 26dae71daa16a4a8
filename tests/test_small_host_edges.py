"""Issue 16's controls at their edges, as a hostile client or a careless operator meets them: what a purge
does to those following a job, odd DATABASE_URLs, odd flags."""

import subprocess
import sys
import threading
import time

import lazyboss
from support import ROOT, EventStream, wait_until

# -- a purged job's followers


def test_a_job_stream_ends_at_once_when_this_server_purges_the_job(start_live):
    live = start_live(heartbeat=30)  # the heartbeat's own look at the job is far off
    admin = live.client()
    job = admin.request("POST", "/jobs", {"type": "invoice", "hold": True}).json
    stream = EventStream(live.url, f"/jobs/{job['id']}", timeout=10)
    assert stream.next_event()["data"]["status"] == "held"
    assert admin.request("DELETE", "/jobs?type=invoice&status=held").json == {"deleted": 1}
    started = time.monotonic()
    assert stream.next_event() is None  # ended: asked again, it answers 404
    assert time.monotonic() - started < 2
    again = EventStream(live.url, f"/jobs/{job['id']}", {"Last-Event-ID": "1"})
    assert again.status == 404
    wait_until(lambda: admin.request("GET", "/stats").json["open_streams"] == 0, what="the stream's slot freed")


def test_a_job_stream_ends_when_another_process_purges_the_job(live, db_path):
    job = live.client().request("POST", "/jobs", {"type": "invoice"}).json
    stream = EventStream(live.url, f"/jobs/{job['id']}", timeout=10)
    assert stream.next_event()["data"]["status"] == "pending"
    other = lazyboss.Store(str(db_path))  # a second lazyboss on the file: this server hears nothing of it
    try:
        assert other.purge_jobs(["invoice"], ["pending"]) == 1
    finally:
        other.close()
    assert stream.next_event() is None  # within a heartbeat (0.5 s here)


def test_waiting_for_a_released_job_that_is_purged_ends_with_not_found(live):
    client = lazyboss.Client(live.url)
    job = client.submit("invoice", {}, hold=True)
    client.release(job["id"])
    outcome = []

    def wait():
        try:
            client.wait(job["id"], timeout=20)
        except lazyboss.NotFound as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: live.client().request("GET", "/stats").json["open_streams"] == 1, what="the follower")
    assert client.purge("invoice", "pending") == 1
    waiter.join(10)
    assert not waiter.is_alive() and outcome, "Client.wait followed a deleted job for ever"


def test_release_wait_on_the_command_line_ends_when_the_job_is_purged(server):
    job = server.client().request("POST", "/jobs", {"type": "invoice", "hold": True}).json
    waiting = subprocess.Popen(
        [sys.executable, str(ROOT / "lazyboss.py"), "release", job["id"], "--wait", "--server", server.url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: server.client().request("GET", f"/jobs/{job['id']}").json["status"] == "pending")
        time.sleep(0.3)  # following its stream now
        server.client().request("DELETE", "/jobs?type=invoice&status=pending")
        _, stderr = waiting.communicate(timeout=20)
    finally:
        waiting.kill()
    assert waiting.returncode == 3 and f"no job {job['id']}" in stderr
