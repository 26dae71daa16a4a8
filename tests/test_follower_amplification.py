"""A follower gets a large job's parameters once, not again with each progress event (over a live server)."""

import json

import lazyboss
from support import Client, EventStream

LARGE = 500_000


def test_progress_events_of_a_large_job_carry_what_changed_and_merge_into_the_whole_job(live):
    client = Client(live.url, user="w1:")
    job = client.request("POST", "/jobs", {"type": "big", "parameters": {"blob": "x" * LARGE}}).json
    firehose = EventStream(live.url, "/events?type=big", {"Last-Event-ID": "0"})
    follower = EventStream(live.url, f"/jobs/{job['id']}")
    opening = follower.next_event()["data"]
    assert opening["parameters"] == {"blob": "x" * LARGE}  # the job whole, once
    submitted = firehose.next_event()["data"]
    assert submitted["event"] == "submitted" and submitted["job"]["parameters"] == opening["parameters"]

    claimed = client.request("POST", "/jobs/attempt?type=big").json
    progress = f"/jobs/{job['id']}/attempts/{claimed['attempt']}/progress"
    for number in range(1, 31):
        sent = client.request(
            "PUT", progress, f"id: {number}\nevent: percent\ndata: {number}\n\n", {"Content-Type": "text/event-stream"}
        )
        assert sent.status == 202
    client.request("PUT", f"/jobs/{job['id']}/attempts/{claimed['attempt']}/result", {"thumb": "small"})

    merged = opening
    for stream, job_of in ((firehose, lambda data: data["job"]), (follower, lambda data: data)):
        sizes = []
        while True:
            data = stream.next_event()["data"]
            sizes.append(len(json.dumps(data)))
            if stream is follower:
                merged = {**merged, **data}
            if job_of(data)["status"] == "done":
                assert job_of(data)["result"] == {"thumb": "small"}
                break
            assert "parameters" not in job_of(data)
        assert len(sizes) == 32 and max(sizes) < 2_000  # claimed, 30 progress, done: 16 MB when each was whole
    assert merged == client.request("GET", f"/jobs/{job['id']}").json
    assert merged["progress"] == 30.0
    finished = lazyboss.Client(live.url).wait(job["id"], timeout=10)
    assert finished["parameters"] == {"blob": "x" * LARGE} and finished["result"] == {"thumb": "small"}
