"""Live streams over a real server: following a job, the event firehose, and progress reports."""

import http.client
import threading
import time

from support import EventStream, wait_until

PROMPT = 0.2  # seconds: an event is pushed when it happens, not at the next poll


def submit(client, **fields):
    response = client.request("POST", "/jobs", {"type": "echo", **fields})
    assert response.status == 202
    return response.json


def claim(client):
    response = client.request("POST", "/jobs/attempt", {"wait": 5})
    assert response.status == 201
    return response.json


def progress(client, job, body, headers=None):
    path = f"/jobs/{job['id']}/attempts/{job['attempt']}/progress"
    return client.request("PUT", path, body, {"Content-Type": "text/event-stream", **(headers or {})})


def test_following_a_job_sees_each_change_at_once_and_ends_with_it(live):
    client, worker = live.client(), live.client(user="w1")
    job = submit(client)
    stream = EventStream(live.url, f"/jobs/{job['id']}")
    assert stream.status == 200 and stream.response.getheader("Content-Type").startswith("text/event-stream")
    opening = stream.next_event()
    assert opening["data"]["status"] == "pending" and opening["data"]["id"] == job["id"]

    claimed = claim(worker)
    changed = time.monotonic()
    event = stream.next_event()
    assert time.monotonic() - changed < PROMPT
    assert event["data"]["status"] == "processing" and event["data"]["assignee"] == "w1"
    assert int(event["id"]) > int(opening["id"])

    progress(worker, claimed, "event: percent\ndata: 40\n\n")
    changed = time.monotonic()
    assert stream.next_event()["data"]["progress"] == 40
    assert time.monotonic() - changed < PROMPT

    worker.request("PUT", f"/jobs/{job['id']}/attempts/1/result", {"ok": True})
    final = stream.next_event()
    assert final["data"]["status"] == "done" and final["data"]["result"] == {"ok": True}
    assert stream.next_event() is None  # the stream closes after a terminal state


def test_without_the_accept_header_the_same_url_is_json(live):
    job = submit(live.client())
    response = live.client().request("GET", f"/jobs/{job['id']}")
    assert response.status == 200 and response.json["id"] == job["id"]


def test_a_finished_job_is_one_event_then_the_end(live):
    job = submit(live.client())
    live.client().request("POST", f"/jobs/{job['id']}/cancel")
    stream = EventStream(live.url, f"/jobs/{job['id']}")
    assert stream.next_event()["data"]["status"] == "cancelled"
    assert stream.next_event() is None


def test_resuming_a_job_stream_by_last_event_id_misses_nothing(live):
    client, worker = live.client(), live.client(user="w1")
    job = submit(client)
    first = EventStream(live.url, f"/jobs/{job['id']}")
    opening = first.next_event()
    first.close()
    claimed = claim(worker)  # happens while nobody listens
    progress(worker, claimed, "data: line\n\n")
    resumed = EventStream(live.url, f"/jobs/{job['id']}", {"Last-Event-ID": opening["id"]})
    missed = [resumed.next_event(), resumed.next_event()]
    assert [e["data"]["status"] for e in missed] == ["processing", "processing"]
    assert int(missed[0]["id"]) > int(opening["id"]) and int(missed[1]["id"]) > int(missed[0]["id"])
    worker.request("PUT", f"/jobs/{job['id']}/attempts/1/error", {"boom": 1})
    assert resumed.next_event()["data"]["status"] == "pending"  # an error with attempts left requeues
    live.client().request("POST", f"/jobs/{job['id']}/cancel")
    last = resumed.next_event()
    assert last["data"]["status"] == "cancelled" and resumed.next_event() is None
    # Reconnecting after the end gets 204, which tells EventSource to stop.
    again = EventStream(live.url, f"/jobs/{job['id']}", {"Last-Event-ID": last["id"]})
    assert again.status == 204


def test_the_firehose_carries_every_event_in_order_and_resumes(live):
    client, worker = live.client(), live.client(user="w1")
    stream = EventStream(live.url, "/events")
    a = submit(client)
    b = submit(client, type="other")
    claimed = claim(worker)
    worker.request("PUT", f"/jobs/{claimed['id']}/attempts/1/result", {"n": 1})
    events = [stream.next_event()["data"] for _ in range(4)]
    assert [(e["event"], e["job"]["id"]) for e in events] == [
        ("submitted", a["id"]),
        ("submitted", b["id"]),
        ("claimed", a["id"]),
        ("done", a["id"]),
    ]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    resumed = EventStream(live.url, "/events", {"Last-Event-ID": str(ids[1])})
    assert [resumed.next_event()["data"]["event"] for _ in range(2)] == ["claimed", "done"]


def test_the_firehose_filters_by_type_and_job(live):
    client = live.client()
    by_type = EventStream(live.url, "/events?type=other")
    wanted = submit(client)
    by_job = EventStream(live.url, f"/events?job={wanted['id']}")
    submit(client)
    other = submit(client, type="other")
    client.request("POST", f"/jobs/{wanted['id']}/cancel")
    assert by_type.next_event()["data"]["job"]["id"] == other["id"]
    event = by_job.next_event()["data"]
    assert (event["event"], event["job"]["id"]) == ("cancelled", wanted["id"])


def test_progress_is_acknowledged_stored_once_and_logged_in_order(live):
    client, worker = live.client(), live.client(user="w1")
    job = submit(client)
    claimed = claim(worker)
    body = "id: 1\nevent: log_chunk\ndata: hello\n\nid: 2\nevent: percent\ndata: 25\n\n"
    answer = progress(worker, claimed, body)
    assert answer.status == 202 and answer.headers["Content-Type"].startswith("text/event-stream")
    assert answer.body.decode() == "id: 1\nevent: seen\ndata: seen\n\nid: 2\nevent: seen\ndata: seen\n\n"
    # A resend after a network error: old ids are acknowledged, not stored twice.
    again = progress(worker, claimed, body + "id: 3\ndata: , world\n\n")
    assert again.body.decode().count("event: seen") == 3
    # Ids can come from Last-Event-Id: these events become 4 and 5.
    tail = progress(worker, claimed, "data: !\n\nevent: percent\ndata: 90\n\n", {"Last-Event-Id": "3"})
    assert "id: 4\n" in tail.body.decode() and "id: 5\n" in tail.body.decode()
    log = client.request("GET", f"/jobs/{job['id']}/attempts/1/log")
    assert log.status == 200 and log.headers["Content-Type"].startswith("text/plain")
    assert log.body.decode() == "hello, world!"
    assert client.request("GET", f"/jobs/{job['id']}").json["progress"] == 90


def test_progress_refusals_change_nothing(live):
    client, worker = live.client(), live.client(user="w1")
    job = submit(client)
    claimed = claim(worker)
    intruder = live.client(user="w2")
    assert progress(intruder, claimed, "data: x\n\n").status == 403
    bad = progress(worker, claimed, "event: percent\ndata: lots\n\n")
    assert bad.status == 422 and "percent" in bad.json["detail"]
    assert progress(worker, claimed, "id: one\ndata: x\n\n").status == 422
    wrong_type = worker.request("PUT", f"/jobs/{job['id']}/attempts/1/progress", {"x": 1})
    assert wrong_type.status == 415
    assert client.request("GET", f"/jobs/{job['id']}/attempts/1/log").body == b""
    client.request("POST", f"/jobs/{job['id']}/cancel")
    cancelled = progress(worker, claimed, "data: x\n\n")
    assert cancelled.status == 409 and cancelled.json == {"error": "cancelled", "detail": cancelled.json["detail"]}


def test_idle_streams_get_keep_alive_comments(live):
    stream = EventStream(live.url, "/events")
    started = time.monotonic()
    submit(live.client())
    stream.next_event()
    # The next read blocks until the heartbeat comment, then the next event.
    threading.Timer(1.2, lambda: submit(live.client())).start()
    stream.next_event()
    assert ": keep-alive" in stream.comments
    assert time.monotonic() - started < 5


def test_fifty_followers_and_the_api_still_answers(start_live):
    live = start_live(threads=60)
    job = submit(live.client())
    followers = [EventStream(live.url, f"/jobs/{job['id']}") for _ in range(50)]
    assert all(f.next_event()["data"]["status"] == "pending" for f in followers)
    health = live.client()
    started = time.monotonic()
    assert health.request("GET", "/health").status == 200
    assert time.monotonic() - started < 0.5
    assert health.request("GET", "/stats").json["open_streams"] == 50
    claim(live.client(user="w1"))
    assert all(f.next_event()["data"]["status"] == "processing" for f in followers)


def test_a_follower_that_leaves_frees_its_thread(live):
    stats = live.client()
    stream = EventStream(live.url, "/events")
    wait_until(lambda: stats.request("GET", "/stats").json["open_streams"] == 1, what="the stream to open")
    stream.close()
    wait_until(lambda: stats.request("GET", "/stats").json["open_streams"] == 0, timeout=5, what="the thread to free")


def test_streams_and_long_polls_cannot_take_every_thread(start_live):
    live = start_live(threads=6)  # 4 kept for short requests: room for 2 held requests
    held = [EventStream(live.url, "/events"), EventStream(live.url, "/events")]
    assert all(stream.status == 200 for stream in held)
    refused = EventStream(live.url, "/events")
    assert refused.status == 503 and refused.response.getheader("Retry-After") == "5"
    poll = live.client().request("POST", "/jobs/attempt?wait=5")
    assert poll.status == 503 and poll.json["error"] == "busy"
    assert live.client().request("GET", "/health").status == 200
    assert live.client().request("POST", "/jobs/attempt").status == 204  # no wait: no thread held


def test_shutdown_ends_open_streams(start_live):
    live = start_live()
    stream = EventStream(live.url, "/events")
    wait_until(lambda: live.client().request("GET", "/stats").json["open_streams"] == 1, what="the stream")
    live.server.stop()
    try:
        while stream.next_event() is not None:
            pass
    except (http.client.IncompleteRead, ConnectionError):
        pass  # the connection may be cut rather than ended: either way the client is let go
    live.thread.join(timeout=10)
    assert not live.thread.is_alive()


def test_resuming_a_job_stream_from_before_a_cancel_and_retry_follows_it_to_its_real_end(live):
    client, worker = live.client(), live.client(user="w1")
    job = submit(client)
    opening = EventStream(live.url, f"/jobs/{job['id']}").next_event()
    client.request("POST", f"/jobs/{job['id']}/cancel")
    client.request("POST", f"/jobs/{job['id']}/retry")
    claimed = claim(worker)
    worker.request("PUT", f"/jobs/{job['id']}/attempts/{claimed['attempt']}/result", {"ok": True})
    # A follower that lost its connection before the cancel reconnects now: the cancel is history, not the end.
    resumed = EventStream(live.url, f"/jobs/{job['id']}", {"Last-Event-ID": opening["id"]})
    statuses = []
    while (event := resumed.next_event()) is not None:
        statuses.append(event["data"]["status"])
    assert statuses == ["cancelled", "pending", "processing", "done"]
