"""Running on a small host: systemd notify and socket activation, shutdown, metrics, retention."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lazyboss
from support import ROOT, Client, EventStream, NotifySocket, ServerProcess, rows, start_process, wait_until

# -- shutdown


def test_sigterm_with_a_long_poll_and_a_stream_open_exits_0_quickly_and_loses_nothing(tmp_path):
    db = tmp_path / "term.sqlite"
    server = ServerProcess(db)
    try:
        client = server.client()
        acknowledged = [
            client.request("POST", "/jobs", {"type": "keep", "parameters": n}).json["id"] for n in range(20)
        ]
        stream = EventStream(server.url, "/events")
        answer = {}
        poller = threading.Thread(
            target=lambda: answer.update(poll=server.client().request("POST", "/jobs/attempt?type=none&wait=30"))
        )
        poller.start()
        wait_until(lambda: client.request("GET", "/stats").json["waiting_workers"] == 1, what="the long poll")
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(5) == 0
        assert time.monotonic() - signalled < 5
        poller.join(5)
        assert answer["poll"].status == 204
        assert stream.next_event() is None  # the stream was closed, not left hanging
    finally:
        server.stop()
    assert not os.path.exists(f"{db}-wal") or os.path.getsize(f"{db}-wal") == 0  # checkpointed
    restarted = ServerProcess(db)
    try:
        kept = restarted.client().request("GET", "/jobs?limit=100").json["jobs"]
        assert {job["id"] for job in kept} == set(acknowledged)
    finally:
        restarted.stop()


# -- systemd


def test_the_notify_protocol_ready_watchdog_status_stopping(tmp_path):
    notify = NotifySocket(tmp_path)
    environment = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"}
    server = ServerProcess(tmp_path / "n.sqlite", "--reap-interval", "0.05", env=environment)
    try:
        assert "STATUS=serving on http://127.0.0.1:" in notify.wait_for("READY=1")
        server.client().request("POST", "/jobs", [{"type": "a"}, {"type": "a"}])
        assert "WATCHDOG=1" in notify.wait_for("STATUS=2 pending, 0 processing")
        server.process.send_signal(signal.SIGTERM)
        assert notify.wait_for("STOPPING=1")
        assert server.process.wait(10) == 0
    finally:
        server.stop()


def test_without_notify_socket_nothing_is_sent():
    notifier = lazyboss.SystemdNotifier({})
    assert not notifier.active and notifier.watchdog_interval is None
    notifier.notify("READY=1")  # does nothing, raises nothing


def test_socket_activation_serves_on_the_handed_socket(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # As systemd does: the socket as fd 3, LISTEN_PID naming the process that gets it.
    handover = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3);"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1');"
        "os.execv(sys.executable, [sys.executable] + sys.argv[2:])"
    )
    arguments = [str(ROOT / "lazyboss.py"), "--db", str(tmp_path / "a.sqlite"), "--port", "1"]
    process = start_process(
        [sys.executable, "-c", handover, str(listener.fileno()), *arguments],
        pass_fds=[listener.fileno()],
        stderr=subprocess.PIPE,
        text=True,
    )
    listener.close()
    try:
        client = Client(f"http://127.0.0.1:{port}")
        wait_until(lambda: _answers(client), what="the activated server")
        assert client.request("POST", "/jobs", {"type": "a"}).status == 202
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    assert f"127.0.0.1:{port}" in process.stderr.read()


def _answers(client):
    try:
        return client.request("GET", "/health").status == 200
    except OSError:
        return False


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_the_unit_files_pass_systemd_analyze_verify(tmp_path):
    executable = Path(sys.executable).parent / "lazyboss"
    if not executable.exists():
        pytest.skip("lazyboss is not installed next to this Python (pip install -e .)")
    unit = (ROOT / "systemd" / "lazyboss.service").read_text()
    assert "ExecStart=/opt/lazyboss/bin/lazyboss" in unit
    (tmp_path / "lazyboss.service").write_text(unit.replace("/opt/lazyboss/bin/lazyboss", str(executable)))
    shutil.copy(ROOT / "systemd" / "lazyboss.socket", tmp_path / "lazyboss.socket")
    worker = (ROOT / "systemd" / "lazyboss-worker@.service").read_text()
    (tmp_path / "lazyboss-worker@backup.service").write_text(
        worker.replace("/opt/lazyboss/bin/lazyboss", str(executable))
    )
    units = ["lazyboss.service", "lazyboss.socket", "lazyboss-worker@backup.service"]
    verified = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit) for unit in units)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stderr.strip() == ""


# -- health, stats, metrics


def test_health_is_503_when_the_reaper_does_not_run(store, config):
    import webtest

    reaper = lazyboss.Reaper(store)  # never started
    app = webtest.TestApp(lazyboss.make_app(store, config, reaper))
    response = app.get("/health", status=503)
    assert response.json["status"] == "unhealthy" and response.json["reaper"] != "ok"
    reaper.run_once()
    assert app.get("/health").json["status"] == "ok"


def test_a_reaper_just_started_is_healthy_while_its_first_round_runs(store, monkeypatch):
    reaper, round_may_end = lazyboss.Reaper(store), threading.Event()
    monkeypatch.setattr(reaper, "run_once", lambda: round_may_end.wait(10))
    reaper.start()
    try:
        assert reaper.last_run is None and reaper.healthy()
    finally:
        reaper.stop()
        round_may_end.set()
        reaper.join(10)


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$')


def parse_exposition(text):
    """Check Prometheus' text format line by line; return {(name, labels): value} and {family: type}."""
    samples, types = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram") and name not in types
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not an exposition line: {line!r}"
        name, labels, value = match.groups()
        family = re.sub(r"_(bucket|sum|count)$", "", name) if name not in types else name
        assert family in types, f"{name} has no TYPE line before it"
        samples[(name, labels or "")] = float(value)
    return samples, types


def test_metrics_count_what_happened(app, store):
    job = app.post_json("/jobs", {"type": "resize", "max_attempts": 1}).json
    app.post_json("/jobs", [{"type": "resize"}, {"type": "mail"}])
    claimed = app.post("/jobs/attempt?type=resize", headers={"Authorization": "Bearer w1"}).json
    app.put_json(f"/jobs/{claimed['id']}/attempts/1/error", "boom", headers={"Authorization": "Bearer w1"})
    app.post(f"/jobs/{job['id']}/retry")
    app.get("/jobs/999", status=404)
    response = app.get("/metrics")
    assert response.content_type == "text/plain" and "version=0.0.4" in response.headers["Content-Type"]
    samples, types = parse_exposition(response.text)
    assert samples[("lazyboss_jobs_submitted_total", '{type="resize"}')] == 2
    assert samples[("lazyboss_jobs_submitted_total", '{type="mail"}')] == 1
    assert samples[("lazyboss_jobs_claimed_total", '{type="resize"}')] == 1
    assert samples[("lazyboss_attempts_failed_total", '{type="resize"}')] == 1
    assert samples[("lazyboss_jobs_failed_total", '{type="resize"}')] == 1
    assert samples[("lazyboss_jobs_retried_total", '{type="resize"}')] == 1
    assert samples[("lazyboss_jobs", '{type="resize",status="pending"}')] == 2
    assert samples[("lazyboss_jobs", '{type="mail",status="done"}')] == 0
    assert ("lazyboss_oldest_pending_age_seconds", '{type="mail"}') in samples
    file_bytes = samples.get(("lazyboss_file_bytes", '{file="database"}'))
    assert file_bytes > 0 if store.engine.keeps_a_file else file_bytes is None  # PostgreSQL's files are its own
    assert types["lazyboss_http_request_duration_seconds"] == "histogram"
    count = samples[
        ("lazyboss_http_request_duration_seconds_count", '{method="GET",route="/jobs/<job_id>",code="4xx"}')
    ]
    inf = samples[
        ("lazyboss_http_request_duration_seconds_bucket", '{method="GET",route="/jobs/<job_id>",code="4xx",le="+Inf"}')
    ]
    assert count == inf == 1
    stats = app.get("/stats").json
    assert stats["counters"]["jobs_submitted"] == {"mail": 1, "resize": 2}
    assert stats["jobs"]["pending"] == 3 and stats["up_since"].endswith("Z")


def test_metrics_over_a_live_server_show_streams_and_waiting_workers(live):
    stream = EventStream(live.url, "/events")
    answer = {}
    poller = threading.Thread(target=lambda: answer.update(r=live.client().request("POST", "/jobs/attempt?wait=10")))
    poller.start()
    client = live.client()
    wait_until(lambda: client.request("GET", "/stats").json["waiting_workers"] == 1, what="the long poll")
    wait_until(lambda: live.reaper.last_run is not None, what="the reaper's first round")
    samples, _ = parse_exposition(client.request("GET", "/metrics").body.decode())
    assert samples[("lazyboss_open_streams", "")] == 1 and samples[("lazyboss_waiting_workers", "")] == 1
    assert samples[("lazyboss_reaper_last_run_timestamp_seconds", "")] > time.time() - 10
    client.request("POST", "/jobs", {"type": "x"})
    poller.join(10)
    stream.close()


# -- retention


def test_retention_deletes_what_is_old_and_keeps_what_is_not(app, store, clock):
    def finish(job_type):
        job = app.post_json("/jobs", {"type": job_type}).json
        app.post(f"/jobs/attempt?type={job_type}", headers={"Authorization": "Bearer w"})
        path = f"/jobs/{job['id']}/attempts/1"
        app.put(
            f"{path}/progress",
            "data: log\n\n",
            headers={"Content-Type": "text/event-stream", "Authorization": "Bearer w"},
        )
        app.put_json(f"{path}/result", 1, headers={"Authorization": "Bearer w"})
        return job["id"]

    old = finish("old")
    old_cancelled = app.post_json("/jobs", {"type": "old"}).json["id"]
    app.post(f"/jobs/{old_cancelled}/cancel")
    clock.advance(3600)
    recent = finish("recent")
    waiting = app.post_json("/jobs", {"type": "waiting"}).json["id"]
    reaper = lazyboss.Reaper(store, retain=1800)
    reaper.run_once()
    for gone in (old, old_cancelled):
        app.get(f"/jobs/{gone}", status=404)
    assert app.get(f"/jobs/{recent}").json["status"] == "done"
    assert app.get(f"/jobs/{waiting}").json["status"] == "pending"
    for table in ("events", "attempts", "progress"):
        kept = {row[0] for row in rows(store, f"SELECT DISTINCT job_id FROM {table}")}
        assert not kept & {int(old), int(old_cancelled)}, table
    assert int(recent) in {row[0] for row in rows(store, "SELECT job_id FROM progress")}
