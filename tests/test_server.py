"""Behaviour across the wire: a real waitress server on loopback, and real server processes."""

import concurrent.futures
import signal
import threading
import time

import lazyboss
from support import Client, ServerProcess, run_cli, wait_until


def test_a_waiting_worker_gets_a_new_job_within_milliseconds(live):
    worker = live.client(user="w1")
    answer = {}

    def long_poll():
        answer["response"] = worker.request("POST", "/jobs/attempt?wait=20&type=urgent")
        answer["at"] = time.monotonic()

    poller = threading.Thread(target=long_poll)
    poller.start()
    monitor = live.client()
    wait_until(lambda: monitor.request("GET", "/stats").json["waiting_workers"] == 1, what="the worker to wait")
    live.client().request("POST", "/jobs", {"type": "other"})  # not its type: it keeps waiting
    submitted = live.client().request("POST", "/jobs", {"type": "urgent", "parameters": 42})
    sent = time.monotonic()
    poller.join(timeout=10)
    assert answer["response"].status == 201
    assert answer["response"].json["id"] == submitted.json["id"]
    assert answer["at"] - sent < 0.5


def test_a_long_poll_with_nothing_to_do_ends_with_204_after_wait(live):
    started = time.monotonic()
    response = live.client().request("POST", "/jobs/attempt", {"wait": 0.3})
    assert response.status == 204 and response.body == b""
    assert 0.3 <= time.monotonic() - started < 3


def test_wait_is_capped_by_the_server(tmp_path):
    store = lazyboss.Store(str(tmp_path / "cap.sqlite"))
    server = lazyboss.Server(store, lazyboss.Config(port=0, max_wait=0.2))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        response = Client(f"http://127.0.0.1:{server.port}").request("POST", "/jobs/attempt?wait=3600")
        assert response.status == 204 and time.monotonic() - started < 3
    finally:
        server.stop()
        thread.join(timeout=10)
        store.close()


def test_the_reaper_expires_a_silent_worker_and_the_job_is_handed_out_again(live):
    client = live.client()
    job = client.request("POST", "/jobs", {"type": "fragile", "timeout": 0.3}).json
    assert live.client(user="w1").request("POST", "/jobs/attempt").status == 201
    requeued = wait_until(
        lambda: (lambda j: j if j["status"] == "pending" else None)(client.request("GET", f"/jobs/{job['id']}").json),
        what="the lease to expire",
    )
    assert requeued["attempts"] == 1 and requeued["error"]["error"] == "expired"
    late = live.client(user="w1").request("PUT", f"/jobs/{job['id']}/attempts/1/result", {"late": True})
    assert late.status == 409 and late.json["error"] == "expired"
    second = live.client(user="w2").request("POST", "/jobs/attempt", {"wait": 10}).json
    assert (second["id"], second["attempt"], second["assignee"]) == (job["id"], "2", "w2")


def test_eight_threads_claiming_2000_jobs_claim_each_exactly_once(live):
    batch = [{"type": "bulk", "parameters": n} for n in range(2000)]
    assert live.client().request("POST", "/jobs", batch).status == 202

    def drain(name):
        worker = live.client(user=name)
        taken = []
        while True:
            response = worker.request("POST", "/jobs/attempt")
            if response.status == 204:
                return taken
            taken.append(response.json["id"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        claimed = [job for share in pool.map(drain, [f"w{n}" for n in range(8)]) for job in share]
    assert len(claimed) == 2000 and len(set(claimed)) == 2000
    listing = live.client().request("GET", "/jobs?status=pending").json
    assert listing["jobs"] == []


def test_two_processes_on_one_file_never_hand_out_a_job_twice(tmp_path):
    db = tmp_path / "shared.sqlite"
    servers = [ServerProcess(db, "--log-level", "warning") for _ in range(2)]
    try:
        servers[0].client().request("POST", "/jobs", [{"type": "t"} for _ in range(400)])

        def drain(server):
            worker = server.client(user="w")
            taken = []
            while (response := worker.request("POST", "/jobs/attempt")).status == 201:
                taken.append(response.json["id"])
            return taken

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            claimed = sum(pool.map(drain, servers + servers), [])
        assert len(claimed) == 400 and len(set(claimed)) == 400
    finally:
        for server in servers:
            server.stop()


def test_acknowledged_jobs_survive_sigkill(tmp_path):
    db = tmp_path / "durable.sqlite"
    server = ServerProcess(db, "--log-level", "warning")
    acknowledged = []
    try:

        def submit_many(n):
            client = server.client()
            for i in range(n):
                response = client.request("POST", "/jobs", {"type": "keep", "parameters": i})
                assert response.status == 202
                acknowledged.append(response.json["id"])

        threads = [threading.Thread(target=submit_many, args=(50,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        server.stop()
    assert len(acknowledged) == 200
    restarted = ServerProcess(db, "--log-level", "warning")
    try:
        listing = restarted.client().request("GET", "/jobs?limit=1000").json
        assert {job["id"] for job in listing["jobs"]} == set(acknowledged)
    finally:
        restarted.stop()


def test_listening_beyond_loopback_without_tokens_exits_2(tmp_path):
    finished = run_cli("--db", str(tmp_path / "x.sqlite"), "--host", "0.0.0.0")
    assert finished.returncode == 2
    assert "0.0.0.0" in finished.stderr and "token" in finished.stderr
    assert run_cli("--db", str(tmp_path / "x.sqlite"), env={"LAZYBOSS_HOST": "0.0.0.0"}).returncode == 2


def test_flags_come_from_the_environment_too(tmp_path):
    server = ServerProcess(tmp_path / "env.sqlite", env={"LAZYBOSS_LOG_LEVEL": "warning", "LAZYBOSS_MAX_WAIT": "0.2"})
    try:
        started = time.monotonic()
        assert server.client().request("POST", "/jobs/attempt?wait=60").status == 204
        assert time.monotonic() - started < 3
    finally:
        server.stop()
    assert not any("POST /jobs/attempt" in line for line in server.log)


def test_help_names_every_flag_and_its_variable():
    finished = run_cli("--help")
    assert finished.returncode == 0
    for flag in ("--db", "--host", "--port", "--threads", "--max-wait", "--max-body", "--sync", "--log-level"):
        assert flag in finished.stdout
    assert "LAZYBOSS_MAX_BODY" in finished.stdout


def test_bad_flags_are_usage_errors(tmp_path):
    assert run_cli("--port", "eighty").returncode == 2
    assert run_cli("--db", str(tmp_path / "x.sqlite"), "--retain", "forever").returncode == 2
