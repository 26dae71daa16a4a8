"""Streams share their reads: one read of the event log serves every follower of /events and of job streams."""

import lazyboss
from support import EventStream


def count_log_reads(store, monkeypatch):
    """Count the store's reads of the event log from now on."""
    reads = []
    read = store.events_after

    def counted(*args, **kwargs):
        reads.append(args)
        return read(*args, **kwargs)

    monkeypatch.setattr(store, "events_after", counted)
    return reads


def submit_batch(client, count, job_type="fan"):
    answer = client.request("POST", "/jobs", [{"type": job_type, "parameters": n} for n in range(count)])
    assert answer.status == 202
    return answer.json


def test_forty_followers_cost_about_one_read_per_batch_of_events(start_live, monkeypatch):
    live = start_live(threads=50)
    client = live.client()
    job = submit_batch(client, 1, "watched")[0]
    firehoses = [EventStream(live.url, "/events") for _ in range(20)]
    by_type = [EventStream(live.url, "/events?type=fan") for _ in range(10)]
    by_job = [EventStream(live.url, f"/jobs/{job['id']}") for _ in range(10)]
    assert all(stream.next_event()["data"]["status"] == "pending" for stream in by_job)
    reads = count_log_reads(live.store, monkeypatch)
    batches = []
    for _ in range(5):
        batches.append(submit_batch(client, 20))
        expected = [("submitted", submitted["id"]) for submitted in batches[-1]]
        for stream in firehoses + by_type:
            events = [stream.next_event()["data"] for _ in expected]
            assert [(event["event"], event["job"]["id"]) for event in events] == expected
    client.request("POST", f"/jobs/{job['id']}/cancel")
    for stream in by_job:
        assert stream.next_event()["data"]["status"] == "cancelled"
        assert stream.next_event() is None  # the job is over: so is its stream
    assert [stream.next_event()["data"]["event"] for stream in firehoses] == ["cancelled"] * 20
    # Each follower reading the log itself made at least 40 reads per batch: 240 here.
    assert len(reads) <= 2 * 6 + 3, reads


def test_a_follower_behind_the_window_reads_the_log_itself_until_it_reaches_it(start_live, monkeypatch):
    monkeypatch.setattr(lazyboss._EventFeed, "WINDOW_EVENTS", 5)
    live = start_live()
    client = live.client()
    live_follower = EventStream(live.url, "/events?type=b")
    jobs = [client.request("POST", "/jobs", {"type": "ab"[n % 2], "parameters": n}).json for n in range(30)]
    assert [live_follower.next_event()["data"]["job"]["id"] for _ in range(15)] == [job["id"] for job in jobs[1::2]]
    replay = EventStream(live.url, "/events", {"Last-Event-ID": "0"})
    assert [replay.next_event()["data"]["job"]["id"] for _ in range(30)] == [job["id"] for job in jobs]
    more = submit_batch(client, 3)
    assert [replay.next_event()["data"]["job"]["id"] for _ in range(3)] == [job["id"] for job in more]
    # A job's stream resumed from its first event: its later events are old by now, and still come.
    first = EventStream(live.url, f"/jobs/{jobs[0]['id']}")
    opening = first.next_event()
    client.request("POST", f"/jobs/{jobs[0]['id']}/cancel")
    assert first.next_event()["data"]["status"] == "cancelled"
    resumed = EventStream(live.url, f"/jobs/{jobs[0]['id']}", {"Last-Event-ID": "1"})
    assert resumed.next_event()["data"]["status"] == "cancelled" and opening["data"]["status"] == "pending"


def test_a_feed_window_of_large_jobs_stays_within_its_bytes(store):
    big = "x" * 300_000
    store.submit_jobs([lazyboss.JobSpec("big", parameters=big) for _ in range(3)])
    feed = store.feed
    assert feed.events_after(0, [], []) != []  # behind a window not read yet: from the log itself
    store.submit_jobs([lazyboss.JobSpec("big", parameters=big) for _ in range(30)])
    seen, after = [], store.last_event_id() - 30
    while events := feed.events_after(after, [], []):
        seen += events
        after = events[-1].id
    assert len(seen) == 30
    assert sum(event.size for event in feed._events) <= feed.WINDOW_BYTES
