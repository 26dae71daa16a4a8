"""What a credential opened ends with it: long polls and streams of a revoked token or session.

Revoked from another process (`lazyboss token revoke` on the file), as an operator does.
"""

import threading

from support import EventStream, open_long_poll, run_cli, wait_until


def tokens(live_store):
    return {role: live_store.create_token(f"the-{role}", role) for role in ("admin", "worker", "client")}


def workers_waiting(live, token=None):
    return live.client(token=token).request("GET", "/stats").json["waiting_workers"]


def submit(client, job_type, parameters=None):
    answer = client.request("POST", "/jobs", {"type": job_type, "parameters": parameters or {}})
    assert answer.status == 202
    return answer.json


def revoke(live_store, name):
    assert run_cli("--db", live_store.path, "token", "revoke", name).returncode == 0


def test_a_worker_revoked_while_it_long_polls_takes_no_job(live, live_store):
    secrets = tokens(live_store)
    worker = live.client(token=secrets["worker"])
    answers = []
    poll = threading.Thread(target=lambda: answers.append(worker.request("POST", "/jobs/attempt?wait=20")))
    poll.start()
    wait_until(lambda: workers_waiting(live, secrets["admin"]) == 1, what="the worker waiting")
    revoke(live_store, "the-worker")
    job = submit(live.client(token=secrets["admin"]), "resize")
    poll.join(timeout=10)
    assert answers[0].status == 401 and answers[0].json["detail"] == "the credentials were revoked while waiting"
    admin = live.client(token=secrets["admin"])
    assert admin.request("GET", f"/jobs/{job['id']}").json["status"] == "pending"
    assert admin.request("GET", f"/jobs/{job['id']}/attempts").json == []


def test_a_revoked_clients_event_stream_ends_and_stays_shut(live, live_store):
    secrets = tokens(live_store)
    headers = {"Authorization": f"Bearer {secrets['client']}"}
    stream = EventStream(live.url, "/events", headers)
    admin = live.client(token=secrets["admin"])
    first = submit(admin, "mail")
    assert stream.next_event()["data"]["job"]["id"] == first["id"]
    revoke(live_store, "the-client")
    while (event := stream.next_event()) is not None:  # each read bounded: a stream left open fails here
        assert event["data"]["job"]["id"] == first["id"]
    later = submit(admin, "mail", {"secret": "hunter2"})
    again = EventStream(live.url, "/events", {**headers, "Last-Event-ID": "0"})
    assert again.status == 401
    assert later["id"] != first["id"]


def test_a_browser_sessions_job_stream_ends_when_its_token_is_revoked(live, live_store):
    secrets = tokens(live_store)
    login = live.client().request(
        "POST", "/login", f"token={secrets['client']}", {"Content-Type": "application/x-www-form-urlencoded"}
    )
    cookie = login.headers["Set-Cookie"].split(";")[0]
    job = submit(live.client(token=secrets["admin"]), "mail")
    stream = EventStream(live.url, f"/jobs/{job['id']}", {"Cookie": cookie})
    assert stream.status == 200 and stream.next_event()["data"]["status"] == "pending"
    revoke(live_store, "the-client")
    assert stream.next_event() is None


def test_a_long_poll_in_open_mode_ends_when_the_first_token_is_made(live, live_store):
    sock = open_long_poll(live, "wait=20")
    wait_until(lambda: workers_waiting(live) == 1, what="the worker waiting")
    assert run_cli("--db", live_store.path, "token", "create", "--role", "admin", "--name", "me").returncode == 0
    live_store.queue_changed.fire()  # what a submit would do: the waiting worker looks again
    answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 401")
