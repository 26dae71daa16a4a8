"""What every request goes through, made cheaper, keeps its meaning: the request metrics' buckets,
the open-mode host check asked again and again, headers read from the environ."""

import http.client
import json

import lazyboss


def bucket_lines(histogram):
    """{le: count} and the count and sum lines of a histogram's one series."""
    exposition = lazyboss._Exposition()
    histogram.expose(exposition)
    buckets, totals = {}, {}
    for line in exposition.text().splitlines():
        if line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        if name.startswith("d_bucket"):
            buckets[name.split('le="')[1].split('"')[0]] = float(value)
        else:
            totals[name.split("{")[0]] = float(value)
    return buckets, totals


def test_request_durations_are_cumulative_buckets_with_each_bound_inclusive():
    histogram = lazyboss._Histogram("d", "durations")
    labels = ("GET", "/jobs", "2xx")
    for seconds in (0.0005, 0.001, 0.0011, 0.3, 61.0):  # 0.001 is a bound: it counts in le="0.001"
        histogram.observe(labels, seconds)
    buckets, totals = bucket_lines(histogram)
    assert buckets["0.001"] == 2 and buckets["0.0025"] == 3 and buckets["0.25"] == 3 and buckets["0.5"] == 4
    assert buckets["60"] == 4 and buckets["+Inf"] == 5 == totals["d_count"]
    assert list(buckets.values()) == sorted(buckets.values())
    assert abs(totals["d_sum"] - 61.3026) < 1e-9


def test_open_mode_answers_each_host_as_itself_however_often_asked(app):
    for _ in range(3):  # asked again, a name's answer is the same; another name gets its own
        assert app.get("/jobs", headers={"Host": "localhost:8080"}).status_int == 200
        assert app.get("/jobs", headers={"Host": "evil.example"}, status=403).json["error"] == "host"
        assert app.get("/jobs", headers={"Host": "[::1]:9"}).status_int == 200
        assert app.get("/jobs", headers={"Host": "127.evil.example"}, status=403).json["error"] == "host"


def test_headers_are_read_as_utf_8_and_absent_ones_as_absent(app):
    job = app.post_json("/jobs", {"type": "a"}, headers={"Idempotency-Key": "clé".encode().decode("latin-1")})
    again = app.post_json("/jobs", {"type": "a"}, headers={"Idempotency-Key": "clé".encode().decode("latin-1")})
    assert again.json["id"] == job.json["id"]
    assert app.get(f"/jobs/{job.json['id']}").json["id"] == job.json["id"]  # no Accept: the job, not its stream


def test_answers_of_every_kind_keep_their_framing_on_one_connection(live):
    # A head sent with its body in one write must still frame each answer exactly: a keep-alive
    # connection reads every kind in turn, and the next answer starts where the last one ended.
    connection = http.client.HTTPConnection("127.0.0.1", live.server.port, timeout=10)
    headers = {"Content-Type": "application/json"}

    def ask(method, path, body=None):
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response, response.read()

    response, body = ask("POST", "/jobs", json.dumps({"type": "framed", "parameters": {"text": "é" * 3000}}))
    job = json.loads(body)
    assert response.status == 202 and int(response.headers["Content-Length"]) == len(body)
    first_socket = connection.sock
    response, body = ask("HEAD", f"/jobs/{job['id']}")
    assert response.status == 200 and body == b""
    response, body = ask("POST", "/jobs/attempt?type=framed")
    assert response.status == 201 and json.loads(body)["parameters"]["text"] == "é" * 3000
    response, body = ask("GET", "/nowhere")
    assert response.status == 404 and json.loads(body)["error"] == "not_found"
    response, body = ask("GET", f"/jobs/{job['id']}")
    assert response.status == 200 and json.loads(body)["status"] == "processing"
    assert connection.sock is first_socket  # never closed and reopened
    response, body = ask("POST", "/jobs/attempt?type=nothing")
    assert response.status == 204 and body == b""
    connection.close()


def test_a_secret_is_looked_up_first_and_open_mode_still_asked_without_one(app, store):
    # Open mode: a Bearer text (a secret meant for another server, say) changes nothing.
    assert app.get("/jobs", headers={"Authorization": "Bearer elsewhere"}).status_int == 200
    secret = store.create_token("w1", "worker")
    worker = {"Authorization": f"Bearer {secret}"}
    assert app.post_json("/jobs", {"type": "a"}, headers=worker).status_int == 202
    assert app.get("/jobs", headers={"Authorization": "Bearer elsewhere"}, status=401).json["error"] == "unauthorized"
    assert app.get("/jobs", status=401).json["error"] == "unauthorized"
    assert app.get("/tokens", headers=worker, status=403).json["error"] == "forbidden"
    store.revoke_token("w1")  # open mode again: the same secret is nobody's now, and no refusal
    assert app.get("/jobs", headers=worker).status_int == 200
