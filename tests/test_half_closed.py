"""A client that half-closes its socket after its request (shutdown(SHUT_WR)) is a client gone: its long poll
ends and frees its slot, and no job is leased to it unless it received it (over a live server)."""

import socket

from support import Client, read_all, wait_until


def half_closed_claim(live, query):
    sock = socket.create_connection(("127.0.0.1", live.server.port), timeout=10)
    request = f"POST /jobs/attempt?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic Z2hvc3Q6\r\n"
    sock.sendall(f"{request}Content-Length: 0\r\n\r\n".encode())
    sock.shutdown(socket.SHUT_WR)
    return sock


def test_a_half_closed_long_poll_ends_frees_its_slot_and_takes_no_job(live):
    client = Client(live.url)
    polls = [half_closed_claim(live, "wait=30&type=u") for _ in range(3)]
    for sock in polls:
        assert read_all(sock) == b""  # dropped, at once: not after its 30 s
    wait_until(lambda: client.request("GET", "/stats").json["waiting_workers"] == 0, timeout=5, what="free slots")
    job = client.request("POST", "/jobs", {"type": "u"}).json
    assert client.request("GET", f"/jobs/{job['id']}").json["status"] == "pending"
    claimed = Client(live.url, user="live:").request("POST", "/jobs/attempt?type=u&wait=5")
    assert claimed.status == 201 and claimed.json["id"] == job["id"] and claimed.json["assignee"] == "live"


def test_a_job_claimed_by_a_half_closing_client_is_leased_only_if_the_answer_reached_it(live):
    client = Client(live.url)

    def status(job_id):
        return client.request("GET", f"/jobs/{job_id}").json

    for _ in range(10):
        job = client.request("POST", "/jobs", {"type": "v"}).json
        answer = read_all(half_closed_claim(live, "type=v"))
        if answer.startswith(b"HTTP/1.1 201"):  # a half-closed socket still reads: it got the job
            assert f'"id":"{job["id"]}"'.encode() in answer and status(job["id"])["assignee"] == "ghost"
        else:  # dropped before its answer: the job is put back at once, not after its lease
            wait_until(lambda job_id=job["id"]: status(job_id)["status"] == "pending", timeout=5, what="the job back")
            client.request("POST", f"/jobs/{job['id']}/cancel")
