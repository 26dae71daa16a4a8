"""A hostile or merely unusual client at the wire (raw sockets against a real waitress server on 127.0.0.1):
what it sends is framed, answered and kept as HTTP/1.1 says."""

import http.client
import socket

from support import read_all


def read_answers(sock, count):
    """The status lines of the first `count` answers on `sock` (each a head without a body, or with a
    Content-Length), or of as many as came before the server closed."""
    data, statuses = b"", []
    while len(statuses) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            lines = head.split(b"\r\n")
            fields = dict(line.split(b": ", 1) for line in lines[1:])
            length = int(fields.get(b"Content-Length", b"0"))
            if len(rest) >= length:
                statuses.append(lines[0].decode())
                data = rest[length:]
                continue
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return statuses


def test_an_empty_claim_keeps_the_connection_open(live):
    connection = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
    connection.request("POST", "/jobs/attempt?type=nothing", headers={"Content-Length": "0"})
    answer = connection.getresponse()
    answer.read()
    assert answer.status == 204 and answer.getheader("Connection") is None
    first = connection.sock.getsockname()
    connection.request("GET", "/health")
    again = connection.getresponse()
    assert again.status == 200 and again.read()
    assert connection.sock.getsockname() == first  # the same connection, not a new one
    connection.close()


def test_requests_pipelined_behind_an_empty_claim_are_answered(live):
    claim = b"POST /jobs/attempt?type=nothing&wait=0.2 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
    health = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=10) as sock:
        sock.sendall(claim + claim + health)
        assert read_answers(sock, 3) == ["HTTP/1.1 204 No Content"] * 2 + ["HTTP/1.1 200 OK"]


def test_an_empty_claim_that_asks_to_close_is_closed(live):
    request = b"POST /jobs/attempt?type=nothing HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n"
    request += b"Connection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 204 No Content\r\n") and b"Connection: close\r\n" in answer
