"""A credential that ends (a token revoked, a session logged out) ends what it opened: its streams and
its waiting claims, promptly, over a real server; and it is refused after."""

import threading

import lazyboss
from support import Client, EventStream, wait_until


def read_to_the_end(stream):
    """A thread reading the stream's events until it ends; the events it got."""
    events = []

    def read():
        while (event := stream.next_event()) is not None:
            events.append(event)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return reader, events


def tokens(store):
    return {role: store.create_token(role, role) for role in ("admin", "worker", "client")}


def test_a_revoked_workers_long_poll_is_refused_at_once_and_takes_no_job(live):
    secrets = tokens(live.store)
    admin = Client(live.url, token=secrets["admin"])
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(
            Client(live.url, token=secrets["worker"], timeout=20).request("POST", "/jobs/attempt?wait=30&type=x")
        )
    )
    waiter.start()
    wait_until(lambda: admin.request("GET", "/stats").json["waiting_workers"] == 1, what="the long poll")

    assert admin.request("DELETE", "/tokens/worker").status == 204
    waiter.join(timeout=5)
    assert not waiter.is_alive(), "the long poll outlived its token"
    assert answers[0].status == 401 and answers[0].json["error"] == "unauthorized"
    job = admin.request("POST", "/jobs", {"type": "x"}).json
    assert admin.request("GET", f"/jobs/{job['id']}").json["status"] == "pending"
    assert admin.request("GET", "/stats").json["waiting_workers"] == 0
    refused = Client(live.url, token=secrets["worker"]).request("POST", "/jobs/attempt?type=x")
    assert refused.status == 401


def test_a_revoked_clients_streams_end_and_carry_nothing_after(live):
    secrets = tokens(live.store)
    admin = Client(live.url, token=secrets["admin"])
    job = admin.request("POST", "/jobs", {"type": "x"}).json
    firehose = EventStream(live.url, "/events", {"Authorization": f"Bearer {secrets['client']}"})
    follower = EventStream(live.url, f"/jobs/{job['id']}", {"Authorization": f"Bearer {secrets['client']}"})
    assert (firehose.status, follower.status) == (200, 200)
    assert follower.next_event()["data"]["id"] == job["id"]
    readers = [read_to_the_end(firehose), read_to_the_end(follower)]
    wait_until(lambda: admin.request("GET", "/stats").json["open_streams"] == 2, what="both streams")

    assert admin.request("DELETE", "/tokens/client").status == 204
    secret = admin.request("POST", "/jobs", {"type": "x", "parameters": {"pw": "hunter2"}}).json
    admin.request("POST", f"/jobs/{job['id']}/cancel")
    for reader, events in readers:
        reader.join(timeout=5)
        assert not reader.is_alive(), "a stream outlived its token"
        assert all(secret["id"] not in str(event["data"]) for event in events)
        assert all(event["data"].get("status") != "cancelled" for event in events)
    wait_until(lambda: admin.request("GET", "/stats").json["open_streams"] == 0, what="the streams' slots")
    again = EventStream(live.url, "/events", {"Authorization": f"Bearer {secrets['client']}"})
    assert again.status == 401


def test_a_logged_out_session_ends_its_stream(live):
    secrets = tokens(live.store)
    session = live.store.create_session("client", 3600)
    cookie = {"Cookie": f"lazyboss_session={session}"}
    stream = EventStream(live.url, "/events", cookie)
    assert stream.status == 200
    reader, _ = read_to_the_end(stream)
    admin = Client(live.url, token=secrets["admin"])
    wait_until(lambda: admin.request("GET", "/stats").json["open_streams"] == 1, what="the stream")

    logout = Client(live.url).request(
        "POST", "/logout", headers={**cookie, "X-CSRF-Token": lazyboss._csrf_token(session)}
    )
    assert logout.status == 303
    reader.join(timeout=5)
    assert not reader.is_alive(), "the stream outlived its session"
    assert EventStream(live.url, "/events", cookie).status == 401


def test_a_token_revoked_by_another_process_ends_its_stream_within_about_a_second(live, database):
    secrets = tokens(live.store)
    stream = EventStream(live.url, "/events", {"Authorization": f"Bearer {secrets['client']}"})
    reader, _ = read_to_the_end(stream)
    admin = Client(live.url, token=secrets["admin"])
    wait_until(lambda: admin.request("GET", "/stats").json["open_streams"] == 1, what="the stream")

    other = lazyboss.Store(database)  # as `lazyboss token revoke` would: nothing wakes this server
    try:
        other.revoke_token("client")
    finally:
        other.close()
    reader.join(timeout=3)
    assert not reader.is_alive(), "the stream outlived its token"
