"""Claim windows and labels: a job with claims is reserved for matching workers, then open to any."""

import base64
import concurrent.futures
import time

import pytest

import lazyboss
from support import finished, run_cli, submit


def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:secret".encode()).decode()}


def claim(app, worker, labels=None, query="", status=None, **body):
    response = app.post_json(
        f"/jobs/attempt{query}",
        {**({"labels": labels} if labels is not None else {}), **body},
        headers=basic(worker),
        expect_errors=True,
    )
    assert status is None or response.status_int == status, response.text
    return response.json if response.status_int == 201 else None


def reserved(app, claims, window=60, **fields):
    return app.post_json("/jobs", {"type": "t", "claims": claims, "claim_window": window, **fields}).json


# -- the two phases


def test_during_the_window_only_a_matching_worker_may_claim(app):
    job = reserved(app, {"host": "pi-3"})
    assert (job["claims"], job["claim_window"]) == ({"host": "pi-3"}, 60)
    claim(app, "pi-1", {"host": "pi-1"}, status=204)
    claim(app, "nolabels", status=204)
    taken = claim(app, "pi-3", {"host": "pi-3", "arch": "arm64"}, status=201)
    assert (taken["id"], taken["assignee"]) == (job["id"], "pi-3")


def test_after_the_window_any_worker_of_the_type_may_claim(app, store, clock):
    job = reserved(app, {"host": "pi-3"}, window=60)
    clock.advance(59.9)
    claim(app, "pi-1", {"host": "pi-1"}, status=204)
    clock.advance(0.2)  # the window passed; the reaper has not moved it yet: the claim finds it anyway
    assert claim(app, "pi-1", {"host": "pi-1"}, status=201)["id"] == job["id"]
    other = reserved(app, {"host": "pi-3"}, window=10)
    clock.advance(11)
    assert store.open_lapsed_reservations() == 1  # the reaper's round: now in the open queue
    assert claim(app, "anyone", status=201)["id"] == other["id"]
    assert claim(app, "anyone", query="?type=other", status=204) is None  # still of its type only


def test_a_list_matches_any_of_its_values_and_every_claim_must_match(app):
    job = reserved(app, {"host": "pi-3", "arch": ["arm64", "armv7"]})
    claim(app, "w", {"host": "pi-3"}, status=204)  # no arch label
    claim(app, "w", {"host": "pi-3", "arch": "x86_64"}, status=204)
    claim(app, "w", {"host": "pi-4", "arch": "armv7"}, status=204)
    assert claim(app, "w", {"host": "pi-3", "arch": "armv7"}, status=201)["id"] == job["id"]


def test_labels_come_as_query_parameters_or_in_the_body(app):
    first, second = reserved(app, {"host": "a", "zone": "z1"}), reserved(app, {"host": "a", "zone": "z1"})
    assert app.post("/jobs/attempt?label=host:a&label=zone:z1", status=201).json["id"] == first["id"]
    assert claim(app, "w", {"zone": "z1"}, query="?label=host:a", status=201)["id"] == second["id"]
    claim(app, "w", {"host": "b"}, query="?label=host:a", status=422)


@pytest.mark.parametrize(
    "query, body",
    [("?label=host", {}), ("", {"labels": ["host"]}), ("", {"labels": {"host": 3}}), ("?label=bad%20key:x", {})],
)
def test_bad_labels_are_422(app, query, body):
    assert app.post_json(f"/jobs/attempt{query}", body, status=422).json["error"] == "invalid"


def test_the_window_defaults_from_the_type_and_without_one_claims_hold(app, clock):
    app.put_json("/types/t", {"claim_window": 30})
    assert app.get("/types/t").json["claim_window"] == 30
    from_type = app.post_json("/jobs", {"type": "t", "claims": {"host": "a"}}).json
    assert from_type["claim_window"] == 30
    forever = app.post_json("/jobs", {"type": "u", "claims": {"host": "a"}}).json
    assert forever["claim_window"] is None
    clock.advance(31)
    assert claim(app, "b", {"host": "b"}, status=201)["id"] == from_type["id"]
    clock.advance(365 * 86400)
    claim(app, "b", {"host": "b"}, status=204)  # no window: only a matching worker, however long it waits
    assert claim(app, "a", {"host": "a"}, status=201)["id"] == forever["id"]


def test_the_window_counts_from_when_the_job_falls_due(app, clock):
    job = reserved(app, {"host": "a"}, window=10, delay=100)
    clock.advance(105)
    claim(app, "b", {"host": "b"}, status=204)
    clock.advance(6)
    assert claim(app, "b", {"host": "b"}, status=201)["id"] == job["id"]


def test_a_retry_reserves_the_job_again_from_its_new_run_at(app, clock):
    job = reserved(app, {"host": "a"}, window=60)
    where = app.post_json("/jobs/attempt", {"labels": {"host": "a"}}, headers=basic("a")).headers["Location"]
    app.put_json(f"{where}/error", {"why": "flaky"}, headers=basic("a"))
    clock.advance(10)  # past the back-off (about 2 s), within a new window
    claim(app, "b", {"host": "b"}, status=204)
    assert claim(app, "a", {"host": "a"}, status=201)["attempt"] == "2"
    assert app.get(f"/jobs/{job['id']}").json["claims"] == {"host": "a"}


def test_a_batch_claim_takes_the_open_jobs_and_those_reserved_for_it_in_queue_order(app):
    jobs = [
        app.post_json("/jobs", {"type": "t", "priority": priority, **fields}).json
        for priority, fields in [
            (1, {"claims": {"host": "a"}}),
            (5, {"claims": {"host": "b"}}),
            (3, {}),
            (4, {"claims": {"host": "a"}, "claim_window": 100}),
            (2, {}),
            (9, {"claims": {"host": "b"}}),
        ]
    ]
    taken = claim(app, "a", {"host": "a"}, max=10, status=201)["jobs"]
    assert [job["id"] for job in taken] == [jobs[i]["id"] for i in (3, 2, 4, 0)]
    taken = claim(app, "b", {"host": "b"}, max=10, status=201)["jobs"]
    assert [job["id"] for job in taken] == [jobs[i]["id"] for i in (5, 1)]


@pytest.mark.parametrize(
    "fields",
    [
        {"claims": ["host"]},
        {"claims": {"host": 3}},
        {"claims": {"host": []}},
        {"claims": {"bad key": "x"}},
        {"claims": {"host": ["a", 1]}},
        {"claims": {"host": "a"}, "claim_window": -1},
        {"claim_window": "1m"},
    ],
)
def test_bad_claims_are_422_and_store_nothing(app, fields):
    app.post_json("/jobs", {"type": "t", **fields}, status=422)
    assert app.get("/jobs").json["jobs"] == []


@pytest.mark.sqlite_only
def test_the_claim_is_one_statement_that_reads_through_indexes(store):
    """No plan step reads the jobs table whole: open jobs, lapsed windows and each label have an index."""
    store.submit_jobs([lazyboss.JobSpec(type="t", claims={"host": "a"}), lazyboss.JobSpec(type="t")])
    for types in (None, ["t", "u"]):
        labels = {"host": "a", "arch": "x"}
        query, parameters = store.engine.claimable(types, labels, store.clock(), 5, lazyboss._WRITE_BUDGET)
        plan = [row[3] for row in store.db.execute(f"EXPLAIN QUERY PLAN {query}", parameters)]
        assert not [step for step in plan if step.startswith("SCAN jobs")], plan
        assert sum("job_claims_queue (key=? AND value=?)" in step for step in plan) == 2, plan
        assert any("open_queue" in step for step in plan) and any("jobs_reserved" in step for step in plan)


# -- across the wire


def test_a_label_mismatch_never_claims_under_concurrent_claimers(live):
    """Workers of host b claim (single and batch) while host a's workers do: b gets only the open jobs."""
    admin = live.client()
    for _ in range(4):
        body = [{"type": "t", "claims": {"host": "a"}, "claim_window": 600, "parameters": {"n": n}} for n in range(25)]
        body += [{"type": "t", "parameters": {"open": n}} for n in range(5)]
        assert admin.request("POST", "/jobs", body).status == 202

    def worker(name, host, batch):
        client = live.client(user=f"{name}:")
        taken = []
        while True:
            query = f"?label=host:{host}" + ("&max=7" if batch else "")
            answer = client.request("POST", f"/jobs/attempt{query}")
            if answer.status == 204:
                return taken
            jobs = answer.json["jobs"] if batch else [answer.json]
            taken += [(job["id"], job["claims"]) for job in jobs]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(worker, f"b{n}", "b", n % 2) for n in range(4)]
        futures += [pool.submit(worker, f"a{n}", "a", n % 2) for n in range(4)]
        results = [future.result(timeout=30) for future in futures]
    by_b = [job for taken in results[:4] for job in taken]
    by_a = [job for taken in results[4:] for job in taken]
    assert all(claims is None for _, claims in by_b), by_b
    reserved_ids = [job_id for job_id, claims in by_a if claims is not None]
    assert len(reserved_ids) == len(set(reserved_ids)) == 100
    assert len(by_a) + len(by_b) == len({job_id for job_id, _ in by_a + by_b}) == 120


def test_a_waiting_worker_gets_a_job_the_moment_its_window_ends(live):
    admin = live.client()
    job = admin.request("POST", "/jobs", {"type": "t", "claims": {"host": "a"}, "claim_window": 1}).json
    started = time.monotonic()
    answer = live.client(user="b:").request("POST", "/jobs/attempt?wait=10&label=host:b")
    waited = time.monotonic() - started
    assert answer.status == 201 and answer.json["id"] == job["id"]
    assert 0.8 < waited < 5, waited


def test_the_shell_worker_takes_jobs_reserved_for_its_labels(server, start_worker):
    job_id = submit(server, "t", {"x": 1}, claims={"host": "pi-3"})
    start_worker("--type", "t", "--label", "host=pi-1", command=["cat"])
    start_worker("--type", "t", "--label", "host=pi-3", "--label", "arch=arm64", "--name", "pi-3", command=["cat"])
    job = finished(server, job_id)
    assert (job["status"], job["assignee"]) == ("done", "pi-3")


def test_a_bad_label_flag_is_a_usage_error(server):
    refused = run_cli("work", "--server", server.url, "--type", "t", "--label", "host", "--", "cat")
    assert refused.returncode == 2 and "give KEY=VALUE" in refused.stderr


def test_a_held_job_s_window_starts_when_it_is_released(app, clock):
    job = app.post_json("/jobs", {"type": "t", "hold": True, "claims": {"host": "a"}, "claim_window": 10}).json
    clock.advance(60)
    claim(app, "b", {"host": "b"}, status=204)
    app.post(f"/jobs/{job['id']}/release")
    claim(app, "b", {"host": "b"}, status=204)  # reserved for ten seconds from now
    clock.advance(11)
    assert claim(app, "b", {"host": "b"}, status=201)["id"] == job["id"]
