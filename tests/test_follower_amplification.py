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

    sizes = []
    while (data := firehose.next_event()["data"])["job"]["status"] != "done":
        assert "parameters" not in data["job"]
        sizes.append(len(json.dumps(data)))
    assert data["job"]["result"] == {"thumb": "small"} and "parameters" not in data["job"]
    assert len(sizes) == 31 and max(sizes) < 2_000  # claimed, 30 progress: 16 MB when each was whole

    # A job's stream sends the job whole at every change, as the spec says, built from what changed.
    events = []
    while (event := follower.next_event()) is not None:
        events.append(event)
    states = [event["data"] for event in events]
    assert len(states) == 32 and all(state["parameters"] == {"blob": "x" * LARGE} for state in states)
    assert [state["progress"] for state in states[1:31]] == [float(number) for number in range(1, 31)]
    assert states[-1] == client.request("GET", f"/jobs/{job['id']}").json and states[-1]["result"] == {"thumb": "small"}
    resumed = EventStream(live.url, f"/jobs/{job['id']}", {"Last-Event-ID": events[5]["id"]})
    assert resumed.next_event() == events[6]  # whole again, from the job as it was at the event resumed after
    finished = lazyboss.Client(live.url).wait(job["id"], timeout=10)
    assert finished["parameters"] == {"blob": "x" * LARGE} and finished["result"] == {"thumb": "small"}
