"""The client, the commands and the worker facing answers no lazyboss server gives: a web page, a redirect,
JSON that does not parse or is not what lazyboss answers, a stream that is not an event stream; and a
server that answers long polls at once (`--max-wait 0`). One line and exit 3, or a back-off: never a
traceback, a dead claim loop, or a loop as fast as the server answers."""

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import lazyboss
from support import wait_until

# What a foreign server answers to every request: status, headers, body.
FOREIGN = {
    "a web page": (200, {"Content-Type": "text/html"}, b"<html>\n<body>It works!</body>\n</html>\n"),
    "a redirect": (302, {"Location": "https://example.org/login"}, b""),
    "JSON that does not parse": (200, {"Content-Type": "application/json"}, b"{not json"),
    "a JSON string": (200, {"Content-Type": "application/json"}, b'"hello"'),
    "nothing": (204, {}, b""),
    "a proxy's error page": (502, {"Content-Type": "text/html"}, b"<html>\n<h1>502 Bad Gateway</h1>\n</html>\n"),
    "a proxy's error page called JSON": (502, {"Content-Type": "application/json"}, b"<h1>Bad Gateway</h1>"),
}


class Foreign:
    """An HTTP server on a free loopback port answering every request alike; it counts them."""

    def __init__(self, status, headers, body):
        self.requests = 0
        foreign = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self):
                foreign.requests += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if status != 204:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=sorted(FOREIGN))
def foreign(request):
    server = Foreign(*FOREIGN[request.param])
    yield server
    server.close()


@pytest.mark.parametrize("command", [["jobs"], ["show", "1"], ["submit", "t", "{}"], ["status"], ["cancel", "1"]])
def test_a_command_told_a_foreign_answer_says_so_in_one_line(foreign, command, capsys):
    status = lazyboss.main([*command, "--server", foreign.url])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 3 and len(lines) == 1 and lines[0].startswith("lazyboss: "), lines
    assert foreign.url in lines[0]


def test_a_redirect_is_not_followed_and_names_where_it_led():
    foreign = Foreign(*FOREIGN["a redirect"])
    try:
        with pytest.raises(lazyboss.Unreachable) as refused:  # lazyboss was not reached: another server answered
            lazyboss.Client(foreign.url, token="lb_secret").get("1")
        assert "answered 302 with a redirect to https://example.org/login" in refused.value.detail
        assert foreign.requests == 1
    finally:
        foreign.close()


def test_following_a_job_on_something_that_is_not_an_event_stream_stops_at_once():
    foreign = Foreign(200, {"Content-Type": "application/json"}, b'{"id": "1", "status": "pending"}')
    try:
        with pytest.raises(lazyboss.Unreachable) as refused:
            lazyboss.Client(foreign.url).wait("1", timeout=10)
        assert "event stream" in refused.value.detail and foreign.requests == 1
    finally:
        foreign.close()


def test_a_worker_keeps_claiming_after_answers_it_cannot_read(caplog):
    foreign = Foreign(*FOREIGN["JSON that does not parse"])
    worker = lazyboss.Worker(lazyboss.Client(foreign.url), grace=1)
    worker.task("t")(lambda params, job: None)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: foreign.requests >= 3, what="the worker to claim again after a garbled answer")
        assert any(
            "cannot claim" in record.getMessage() and "not JSON" in record.getMessage() for record in caplog.records
        )
    finally:
        wait_until(lambda: worker._engine is not None, what="the worker to start")
        worker.stop()
        thread.join(10)
        foreign.close()
    assert not thread.is_alive()


def test_a_worker_claims_at_most_once_a_second_from_a_server_that_never_waits(start_live):
    live = start_live(max_wait=0)
    client = lazyboss.Client(live.url)
    worker = lazyboss.Worker(lazyboss.Client(live.url, user="w1:"), grace=1)
    worker.task("t")(lambda params, job: {"n": params["n"]})
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        job = client.submit("t", {"n": 1})
        assert client.wait(job["id"], timeout=10)["result"] == {"n": 1}
        before = _claims_answered(client)
        threading.Event().wait(2.0)  # the rate is what is measured: two seconds of an idle worker
        assert _claims_answered(client) - before <= 4
        job = client.submit("t", {"n": 2})  # and it still takes work within about a second
        assert client.wait(job["id"], timeout=5)["result"] == {"n": 2}
    finally:
        wait_until(lambda: worker._engine is not None, what="the worker to start")
        worker.stop()
        thread.join(10)
    assert not thread.is_alive()


def _claims_answered(client):
    """How many claims the server has answered, from its request histogram."""
    metrics = client.request("GET", "/metrics")[1]
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("lazyboss_http_request_duration_seconds_count") and 'route="/jobs/attempt"' in line
    )


def test_an_answer_dripping_in_a_byte_at_a_time_is_given_up_at_the_timeout():
    listener, stop = socket.create_server(("127.0.0.1", 0)), threading.Event()

    def drip():  # each byte well within a read's timeout, the whole answer never
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 2000:
                conn.sendall(bytes([byte]))
                if stop.wait(0.1):
                    return

    dripping = threading.Thread(target=drip, daemon=True)
    dripping.start()
    started = time.monotonic()
    try:
        with pytest.raises(lazyboss.Unreachable) as refused:
            lazyboss.Client(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=1).request("GET", "/health")
        assert "no whole answer from" in refused.value.detail and "within 1 s" in refused.value.detail
        assert time.monotonic() - started < 10  # not the 200 s the drip would take
    finally:
        stop.set()
        dripping.join(10)
        listener.close()
