"""A follower resumes with a Last-Event-ID from another database: the server restarted on another file, or on
a backup put back in place. Ids there are behind the follower's, and what happens from then on must still
reach it, not only once the ids have caught up (over real server processes)."""

import itertools
import shutil
import threading

import lazyboss
from support import ServerProcess, free_port, wait_until


def stop(server):
    """SIGTERM: the server checkpoints its WAL into the file, so that a copy of the file holds everything."""
    server.process.terminate()
    server.process.wait(10)


def follow(client, events, last_event_id):
    threading.Thread(target=lambda: events.extend(client.events(last_event_id)), daemon=True).start()


def test_a_follower_ahead_of_the_database_gets_what_happens_next(tmp_path):
    port = free_port()
    first = ServerProcess(tmp_path / "a.sqlite", port=port)
    client = lazyboss.Client(first.url)
    for n in range(6):
        client.submit("t", {"n": n})
    last = list(itertools.islice(client.events("0"), 6))[-1]["id"]
    stop(first)
    second = ServerProcess(tmp_path / "b.sqlite", port=port)  # a fresh file: its ids start again from 1
    events = []
    follow(client, events, last)
    # What happens once it is back reaches it: a job submitted before it asked is not "next" (its event's id
    # is below the follower's, on this file), so the submit waits for the stream to be open.
    wait_until(lambda: client.stats()["open_streams"] == 1, what="the follower to be back")
    job = client.submit("t", {"n": "new"})
    wait_until(lambda: events, timeout=10, what="the new job's event")
    assert events[0]["job"]["id"] == job["id"] and events[0]["event"] == "submitted"
    stop(second)


def test_waiting_on_a_job_of_a_backup_put_back_ends_when_the_job_does(tmp_path):
    port = free_port()
    server = ServerProcess(tmp_path / "jobs.sqlite", port=port)
    client = lazyboss.Client(server.url)
    job = client.submit("t")
    stop(server)
    shutil.copy(tmp_path / "jobs.sqlite", tmp_path / "backup.sqlite")  # the job pending, one event
    server = ServerProcess(tmp_path / "jobs.sqlite", port=port)
    for n in range(5):
        client.submit("other", {"n": n})  # events the backup will not have
    worker = lazyboss.Client(server.url, user="w1:")
    worker.request("POST", "/jobs/attempt?type=t")  # a follower of the job saw it claimed, as event 7
    claimed = list(itertools.islice(client.events("0", jobs=[job["id"]]), 2))[-1]
    assert claimed["event"] == "claimed"
    stop(server)
    shutil.copy(tmp_path / "backup.sqlite", tmp_path / "jobs.sqlite")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"jobs.sqlite{suffix}").unlink(missing_ok=True)
    server = ServerProcess(tmp_path / "jobs.sqlite", port=port)
    done = {}
    stream = client._stream(f"/jobs/{job['id']}", claimed["id"])  # the follower comes back with its id
    threading.Thread(target=lambda: done.update(job=[j for _, j in stream][-1]), daemon=True).start()
    claimed = worker.request("POST", "/jobs/attempt?type=t")[1]
    worker.request("PUT", f"/jobs/{job['id']}/attempts/{claimed['attempt']}/result", {"ok": True})
    wait_until(lambda: done, timeout=10, what="the job's stream to bring its end")
    assert done["job"]["status"] == "done"
    stop(server)
