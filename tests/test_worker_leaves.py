"""A worker that hangs up on its long poll (it stopped, or restarts) is a client gone, not a credential
refused: the server counts and logs no 401 for it (over a live server)."""

import socket

from support import Client, wait_until


def test_a_long_poll_left_by_its_worker_is_not_counted_as_refused(live, caplog):
    client = Client(live.url)
    sock = socket.create_connection(("127.0.0.1", live.server.port), timeout=10)
    request = "POST /jobs/attempt?wait=30&type=t HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic dzE6\r\n"
    sock.sendall(f"{request}Content-Length: 0\r\n\r\n".encode())
    wait_until(lambda: client.request("GET", "/stats").json["waiting_workers"] == 1, what="the long poll to wait")
    sock.close()
    wait_until(lambda: client.request("GET", "/stats").json["waiting_workers"] == 0, what="the long poll to end")

    def claims_answered():
        metrics = client.request("GET", "/metrics").body.decode()
        return [
            line
            for line in metrics.splitlines()
            if line.startswith("lazyboss_http_request_duration_seconds_count") and 'route="/jobs/attempt"' in line
        ]

    answered = wait_until(claims_answered, what="the long poll to be counted")
    assert all('code="4xx"' not in line for line in answered), answered
    assert not [record for record in caplog.records if "POST /jobs/attempt 401" in record.getMessage()]
