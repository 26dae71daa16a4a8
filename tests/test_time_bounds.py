"""The latest run_at accepted is shown everywhere a job is; the next millisecond is refused."""

import pytest

LATEST = "9999-12-31T23:59:59.999Z"


@pytest.mark.parametrize("run_at", [LATEST, 253402300799.999])
def test_a_job_due_at_the_latest_accepted_time_is_shown_everywhere(app, store, run_at):
    job = app.post_json("/jobs", {"type": "far", "run_at": run_at, "parameters": {"n": 1}}, status=202).json
    assert job["run_at"] == LATEST
    assert app.get(f"/jobs/{job['id']}").json["run_at"] == LATEST
    assert [listed["run_at"] for listed in app.get("/jobs").json["jobs"]] == [LATEST]
    assert [event.data for event in store.events_after(0, [], [])][0].count(LATEST) == 1
    app.post_json("/jobs", [{"type": "far", "run_at": run_at}], headers={"Content-Type": "application/json"})
    assert 'lazyboss_jobs{type="far",status="pending"} 2' in app.get("/metrics").text
    assert app.get("/stats").json
    page = app.get("/", headers={"Accept": "text/html"})
    assert "far" in page.text
    assert app.post("/jobs/attempt?type=far").status_int == 204  # not due for a long while


@pytest.mark.parametrize(
    "run_at", ["9999-12-31T23:59:59.9995Z", "10000-01-01T00:00:00Z", 253402300799.9995, 253402300800, -0.001]
)
def test_a_run_at_past_the_bound_is_refused_and_stores_nothing(app, run_at):
    refused = app.post_json("/jobs", {"type": "far", "run_at": run_at}, status=422).json
    assert refused["error"] == "invalid" and refused["detail"].startswith("run_at: ")
    assert app.get("/jobs").json["jobs"] == []
