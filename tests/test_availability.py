"""Idle and slow connections cannot make the server unreachable: header deadline, idle timeout, room at the limit."""

import base64
import os
import resource
import socket
import threading
import time

import pytest

from support import EventStream, ServerProcess, wait_until

WORKER = {"Authorization": "Basic " + base64.b64encode(b"w1:").decode()}


def connect(url):
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def is_closed(sock):
    """Whether the server has closed this socket (without blocking)."""
    sock.setblocking(False)
    try:
        return sock.recv(65536) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def closes_within(sock, seconds, what):
    wait_until(lambda: is_closed(sock), timeout=seconds, interval=0.05, what=what)


@pytest.fixture
def serve(start_live):
    """A live server with these settings, once its /health says ok (the reaper's first round is done)."""

    def start(**settings):
        live = start_live(**settings)
        wait_until(lambda: live.client().request("GET", "/health").status == 200, what="the server to be healthy")
        return live

    return start


def a_job_life(client):
    """What must keep working: health, a submit, a claim and its report, each answered in time."""
    started = time.monotonic()
    assert client.request("GET", "/health").status == 200
    assert client.request("POST", "/jobs", {"type": "edge"}).status == 202
    claimed = client.request("POST", "/jobs/attempt?type=edge", headers=WORKER)
    assert claimed.status == 201
    job = claimed.json
    report = client.request("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/result", {"ok": True}, WORKER)
    assert report.status == 201
    return time.monotonic() - started


@pytest.mark.parametrize("max_connections", [500, 100])
def test_300_hostile_sockets_leave_health_submits_and_reports_answering(tmp_path, max_connections):
    server = ServerProcess(tmp_path / "jobs.sqlite", "--max-connections", str(max_connections))
    hostile = []
    try:
        for number in range(300):
            sock = connect(server.url)
            if number % 2:  # slowloris: a request begun, its headers never finished
                sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            hostile.append(sock)
        for _ in range(3):
            assert a_job_life(server.client(timeout=5)) < 2
    finally:
        for sock in hostile:
            sock.close()
        server.stop()


def test_headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_deadline(serve):
    live = serve(header_timeout=1, idle_timeout=30)
    sock = connect(live.url)
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 200
    started = time.monotonic()
    for byte in request:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        if is_closed(sock):
            break
        time.sleep(0.05)
    closes_within(sock, 3, "the slow connection to be closed")
    assert 1 <= time.monotonic() - started < 3.5
    assert a_job_life(live.client()) < 2


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(serve):
    live = serve(header_timeout=1, idle_timeout=30)
    sock = connect(live.url)
    started = time.monotonic()
    closes_within(sock, 3, "the silent connection to be closed")
    assert time.monotonic() - started >= 1


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_not_before(serve):
    live = serve(header_timeout=30, idle_timeout=1.5)
    client = live.client()
    assert client.request("GET", "/health").status == 200
    sock = client.connection.sock
    for _ in range(4):  # in use every half second: kept
        time.sleep(0.5)
        assert client.request("GET", "/health").status == 200
        assert client.connection.sock is sock
    started = time.monotonic()
    closes_within(sock, 4, "the idle connection to be closed")
    assert time.monotonic() - started >= 1


def test_long_polls_and_quiet_streams_outlive_both_timeouts(serve):
    live = serve(header_timeout=0.5, idle_timeout=0.5, heartbeat=60)
    answers = {}

    def long_poll():
        answers["poll"] = live.client(user="w1", timeout=10).request("POST", "/jobs/attempt?wait=3&type=never")

    poller = threading.Thread(target=long_poll)
    poller.start()
    stream = EventStream(live.url, "/events?type=late", timeout=10)
    time.sleep(2.5)  # five idle timeouts without a byte on either
    live.client().request("POST", "/jobs", {"type": "late"})
    event = stream.next_event()
    assert event["data"]["event"] == "submitted" and event["data"]["job"]["type"] == "late"
    stream.close()
    poller.join(timeout=10)
    assert answers["poll"].status == 204


def test_a_busy_answer_closes_its_connection(serve):
    live = serve(threads=5)  # room for one stream
    held = EventStream(live.url, "/events")
    try:
        sock = connect(live.url)
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head = answer.split(b"\r\n\r\n")[0].decode().lower()
        assert head.startswith("http/1.1 503") and "connection: close" in head and "retry-after: 5" in head
        closes_within(sock, 3, "the busy connection to be closed")
    finally:
        held.close()


def test_at_the_limit_the_connection_waiting_longest_makes_room(serve):
    live = serve(max_connections=10, header_timeout=30, idle_timeout=30)
    waiting = []
    for _ in range(10):
        waiting.append(connect(live.url))
        time.sleep(0.02)  # an order of arrival
    stream = EventStream(live.url, "/events?type=seen")  # a running request is never the one to go
    assert a_job_life(live.client()) < 2
    closes_within(waiting[0], 3, "the oldest waiting connection to make room")
    assert not is_closed(waiting[-1])
    live.client().request("POST", "/jobs", {"type": "seen"})
    assert stream.next_event()["data"]["job"]["type"] == "seen"
    stream.close()


def test_requests_still_arriving_hold_a_bounded_number_of_bytes(serve):
    live = serve(max_body=64 * 1024, header_timeout=30, idle_timeout=30)  # 16 x 64 KiB = 1 MiB for all
    uploads = []
    for _ in range(8):
        sock = connect(live.url)
        sock.sendall(b"POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 250000\r\n\r\n")
        sock.sendall(b" " * 200_000)  # then nothing more
        uploads.append(sock)
        time.sleep(0.02)
    closes_within(uploads[2], 3, "the uploads begun first to be closed")
    assert [is_closed(sock) for sock in uploads] == [True] * 3 + [False] * 5
    assert a_job_life(live.client()) < 2


def replaying_follower(live, receive_buffer):
    """A raw socket (with this receive buffer) following /events from the first event, once its stream runs."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", live.server.port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nLast-Event-ID: 0\r\n\r\n")
    client = live.client()
    wait_until(lambda: client.request("GET", "/stats").json["open_streams"] == 1, what="the stream to start")
    return sock


def test_a_stream_whose_client_reads_nothing_is_closed_and_frees_its_thread(serve):
    live = serve(threads=5, idle_timeout=1, header_timeout=30)  # room for one stream
    big = {"blob": "x" * 900_000}
    client = live.client()
    for _ in range(24):  # 24 events of ~1 MB: more than waitress buffers (16 MiB) and the sockets hold
        assert client.request("POST", "/jobs", {"type": "big", "parameters": big}).status == 202
    sock = replaying_follower(live, 4096)
    wait_until(lambda: client.request("GET", "/stats").json["open_streams"] == 0, timeout=15, what="its close")
    follower = EventStream(live.url, "/events")  # the one stream thread is free again
    assert follower.status == 200
    follower.close()
    sock.close()


def test_a_stream_whose_client_falls_behind_then_reads_gets_every_event(serve):
    live = serve(threads=5, idle_timeout=3, header_timeout=30)
    big = {"blob": "x" * 900_000}
    client = live.client()
    for _ in range(24):  # 24 events of ~1 MB: more than the server buffers for one connection
        assert client.request("POST", "/jobs", {"type": "big", "parameters": big}).status == 202
    sock = replaying_follower(live, 1 << 16)
    time.sleep(1.5)  # the client falls behind (within the idle timeout): the stream fills what it may buffer
    sock.settimeout(10)
    received, deadline, marker = b"", time.monotonic() + 20, b'"event":"submitted"'
    while received.count(marker) < 24 and time.monotonic() < deadline:
        chunk = sock.recv(1 << 20)
        assert chunk, f"closed after {received.count(marker)} of 24 events"
        received += chunk
    assert received.count(marker) == 24
    sock.close()


def test_a_stream_whose_client_reads_nothing_is_closed_even_when_the_kernel_holds_all_of_it(serve):
    live = serve(threads=5, idle_timeout=1, header_timeout=30)  # room for one stream
    client = live.client()
    for _ in range(5):  # 50 KB of events: more than the client's window, less than the server's socket holds
        assert client.request("POST", "/jobs", {"type": "small", "parameters": {"pad": "x" * 10_000}}).status == 202
    sock = replaying_follower(live, 4096)
    wait_until(lambda: client.request("GET", "/stats").json["open_streams"] == 0, timeout=15, what="its close")
    sock.close()


@pytest.mark.slow
def test_a_server_out_of_files_makes_room_instead_of_spinning(tmp_path):
    """The process may open no more files (its limit lowered under it, or temporary files of answers that
    clients do not read used the rest): waitress logged a traceback for each failed accept and tried again
    at once, a core spun, and no new connection was answered until the limit of connections was reached."""
    server = ServerProcess(tmp_path / "jobs.sqlite", "--max-connections", "100", "--header-timeout", "30")
    try:
        pid = server.process.pid
        opened = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (opened + 5, opened + 5))
        idle = [connect(server.url) for _ in range(30)]  # 5 accepted, the rest wait in the backlog
        # Answered by making room (the header timeout, 30 s, would come after the client's 10 s); healthy
        # or not as the store can open what it needs.
        health = server.client(timeout=10).request("GET", "/health")
        assert health.status == 200 or health.json["database"] == "cannot_open"
        wait_until(lambda: any("ulimit -n" in line for line in server.log), what="the log line")
        assert not any("Traceback" in line or "accept() threw" in line for line in server.log)
        for sock in idle:
            sock.close()
        wait_until(lambda: server.client().request("GET", "/health").status == 200, what="health again")
        assert server.client().request("POST", "/jobs", {"type": "after"}).status == 202
    finally:
        server.stop()
