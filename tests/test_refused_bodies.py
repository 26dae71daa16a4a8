"""A body too large to read is refused with a 413 its sender reads, not a connection reset.

waitress refuses a Content-Length over its limit (4 x --max-body, at least --max-body + 1 MiB) before
reading the body; lazyboss reads the rest and drops it, so a client still sending hears the answer.
"""

import http.client
import subprocess

import pytest


@pytest.fixture
def small(start_live):
    return start_live(max_body=64 * 1024)


@pytest.mark.parametrize("size", [200_000, 5_000_000, 40_000_000])
def test_a_client_sending_a_body_over_the_limit_reads_the_413(small, size):
    connection = http.client.HTTPConnection("127.0.0.1", small.server.port, timeout=10)
    connection.request("PUT", "/jobs/1/attempts/1/result", b"x" * size, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 413 and answer.read()
    health = http.client.HTTPConnection("127.0.0.1", small.server.port, timeout=10)
    health.request("GET", "/health")
    assert health.getresponse().status == 200


@pytest.mark.parametrize("expect", ["Expect: 100-continue", "Expect:"])
def test_curl_gets_the_413_at_once_with_or_without_expect_continue(small, tmp_path, expect):
    body = tmp_path / "big.json"
    body.write_bytes(b"x" * 3_000_000)
    curl = subprocess.run(
        [
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-H",
            expect,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            f"@{body}",
            f"{small.url}/jobs",
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert curl.stdout == "413"
    assert small.client().request("GET", "/jobs").json["jobs"] == []
