"""The status page in a real browser: Debian's chromium driven by Playwright, against a real waitress server.

Jobs are submitted, claimed, reported on and finished through the HTTP API, and the
page must show each change by itself, without a reload. Screenshots (desktop and phone
widths) are saved under test-artifacts/.
"""

import os

import pytest

import lazyboss
from support import ROOT, Client, ServerProcess, free_port

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[test]'")
expect = sync_api.expect

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
ARTIFACTS = ROOT / "test-artifacts"
A_SECOND = 1000  # ms: how soon the page must show a change

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.access(CHROMIUM, os.X_OK),
        reason=f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser):
    """Open pages in fresh browser contexts (no shared cookies); fail the test on any script error."""
    contexts, errors = [], []

    def open_page(url, **options):
        context = browser.new_context(**{"viewport": DESKTOP, **options})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(error))
        page.goto(url)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert not errors, f"script errors on the page: {errors}"


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page, secret):
    page.fill("input[name=token]", secret)
    page.click("button[type=submit]")


def row(page, card, text):
    return page.locator(f"#{card} tbody tr", has_text=text)


def count_cell(page, job_type, status):
    """The cell of the queue's table that counts a type's jobs in a status."""
    return row(page, "queue", job_type).locator("td").nth(1 + lazyboss.JOB_STATUSES.index(status))


def progress(*events):
    """A progress body: (id, event, data) per event."""
    return "".join(
        f"id: {number}\nevent: {event}\n" + "".join(f"data: {line}\n" for line in str(data).split("\n")) + "\n"
        for number, event, data in events
    )


def report(worker, job, kind, body):
    headers = {"Content-Type": "text/event-stream"} if kind == "progress" else None
    return worker.request("PUT", f"/jobs/{job['id']}/attempts/{job['attempt']}/{kind}", body, headers)


@pytest.fixture
def server(live, live_store):
    """A live server with an admin (ops), a worker (pi-1) and a client (app) token."""
    live.secrets = {
        name: live_store.create_token(name, role)
        for name, role in (("ops", "admin"), ("pi-1", "worker"), ("app", "client"))
    }
    live.admin = Client(live.url, token=live.secrets["ops"])
    live.worker = Client(live.url, token=live.secrets["pi-1"])
    return live


def accept_dialogs(page, answers):
    """Answer each confirmation with the next of `answers` (True: OK; the list may grow), noting what was asked."""
    asked = []

    def answer(dialog):
        asked.append(dialog.message)
        dialog.accept() if answers.pop(0) else dialog.dismiss()

    page.on("dialog", answer)
    return asked


def test_an_admin_sees_every_change_live_and_acts_from_the_page(server, open_page):
    admin, worker = server.admin, server.worker
    page = open_page(server.url + "/")
    log_in(page, "lb_not-a-token")
    expect(page.get_by_role("alert")).to_contain_text("wrong token")
    log_in(page, server.secrets["ops"])
    expect(page.locator("#live")).to_have_text("live")
    page.evaluate("window.notReloaded = true")

    job = admin.request("POST", "/jobs", {"type": "thumbnail", "parameters": {"src": "a.png"}}).json
    expect(count_cell(page, "thumbnail", "pending")).to_have_text("1", timeout=A_SECOND)

    claimed = worker.request("POST", "/jobs/attempt?type=thumbnail").json
    in_flight = row(page, "in-flight", "thumbnail")
    expect(in_flight.locator("td").nth(2)).to_have_text("pi-1", timeout=A_SECOND)
    expect(in_flight.locator("td").nth(3)).to_have_text("1 of 3")
    expect(count_cell(page, "thumbnail", "processing")).to_have_text("1")
    expect(row(page, "workers", "pi-1")).to_contain_text(job["id"])

    report(worker, claimed, "progress", progress((1, "percent", 30), (2, "log_chunk", "resizing a.png")))
    expect(in_flight.locator("progress")).to_have_attribute("value", "30", timeout=A_SECOND)

    in_flight.locator("a[data-nav=job]").click()
    detail = page.locator("#job")
    expect(detail).to_have_attribute("data-job", job["id"])
    expect(detail.locator("pre").first).to_contain_text('"src": "a.png"')
    expect(page.locator("#job-log")).to_have_text("resizing a.png")
    report(worker, claimed, "progress", progress((3, "log_chunk", "\nwrote a.thumb.png")))
    expect(page.locator("#job-log")).to_have_text("resizing a.png\nwrote a.thumb.png", timeout=A_SECOND)

    report(worker, claimed, "result", {"thumb": "a.thumb.png"})
    expect(count_cell(page, "thumbnail", "done")).to_have_text("1", timeout=A_SECOND)
    expect(page.locator("#in-flight")).to_contain_text("Nothing is running.")
    expect(detail.locator("h2")).to_contain_text("done")
    expect(detail).to_contain_text('"thumb": "a.thumb.png"')
    expect(detail.locator("tbody tr td").nth(2)).to_have_text("done")

    failing = admin.request("POST", "/jobs", {"type": "report", "max_attempts": 1}).json
    attempt = worker.request("POST", "/jobs/attempt?type=report").json
    report(worker, attempt, "error", {"error": "crashed", "detail": "disk full"})
    expect(row(page, "failures", "report")).to_contain_text("disk full", timeout=A_SECOND)
    screenshot(page, "status-desktop")

    answers = [True, False, True, True, True]
    asked = accept_dialogs(page, answers)
    row(page, "failures", "report").get_by_role("button", name="Retry").click()
    expect(page.locator("#answer")).to_have_text(f"Retry job {failing['id']}: 200: job {failing['id']} is pending")
    assert admin.request("GET", f"/jobs/{failing['id']}").json["status"] == "pending"

    row(page, "queue", "thumbnail").get_by_role("button", name="Pause").click()  # answered "Cancel"
    page.evaluate("0")  # the click's handler has run: it sent nothing
    expect(page.locator("#answer")).to_have_text(f"Retry job {failing['id']}: 200: job {failing['id']} is pending")
    assert admin.request("GET", "/types/thumbnail").json["paused"] is False
    row(page, "queue", "thumbnail").get_by_role("button", name="Pause").click()
    expect(page.locator("#answer")).to_have_text("Pause type thumbnail: 200: type thumbnail is paused")
    expect(page.locator("#paused")).to_contain_text("thumbnail")
    assert admin.request("GET", "/types/thumbnail").json["paused"] is True
    page.locator("#paused").get_by_role("button", name="Resume").click()
    expect(page.locator("#answer")).to_have_text("Resume type thumbnail: 200: type thumbnail runs")
    expect(page.locator("#paused")).to_have_text("Paused (never handed out): none")

    again = worker.request("POST", "/jobs/attempt?type=report").json
    row(page, "in-flight", "report").get_by_role("button", name="Cancel").click()
    expect(page.locator("#answer")).to_have_text(f"Cancel job {failing['id']}: 200: job {failing['id']} is cancelled")
    assert report(worker, again, "progress", progress((1, "log_chunk", "x"))).json["error"] == "cancelled"
    assert asked == [
        f"Retry job {failing['id']}?",
        "Pause type thumbnail?",
        "Pause type thumbnail?",
        "Resume type thumbnail?",
        f"Cancel job {failing['id']}?",
    ]

    # What makes no job event still shows within a second: a schedule, run from the page.
    admin.request("PUT", "/schedules/hourly", {"type": "report", "every": "1 hour"})
    expect(row(page, "schedules", "hourly")).to_contain_text("in ", timeout=2 * A_SECOND)
    answers.append(True)
    row(page, "schedules", "hourly").get_by_role("button", name="Run now").click()
    expect(page.locator("#answer")).to_contain_text("Run schedule hourly now: 202: job ")
    expect(count_cell(page, "report", "pending")).to_have_text("1")

    assert page.evaluate("window.notReloaded") is True  # every change came without a reload
    page.set_viewport_size(PHONE)
    screenshot(page, "status-phone")


def test_a_client_sees_the_page_but_may_not_act(server, open_page, live_store):
    job = server.admin.request("POST", "/jobs", {"type": "thumbnail"}).json
    page = open_page(server.url + "/")
    log_in(page, server.secrets["app"])
    expect(page.locator("header")).to_contain_text("app (client)")
    expect(count_cell(page, "thumbnail", "pending")).to_have_text("1")
    assert page.locator("button[data-url]").count() == 0
    # Even sent by hand with the page's CSRF token, the server says no.
    status = page.evaluate(
        """async (id) => (await fetch(`/jobs/${id}/cancel`, {method: "POST",
               headers: {"X-CSRF-Token": document.querySelector("meta[name=csrf-token]").content}})).status""",
        job["id"],
    )
    assert status == 403
    assert server.admin.request("GET", f"/jobs/{job['id']}").json["status"] == "pending"
    # Logging out ends the session.
    page.get_by_role("button", name="Log out").click()
    expect(page.locator("input[name=token]")).to_be_visible()
    assert live_store.db.execute("SELECT COUNT(*) FROM sessions WHERE token = 'app'").fetchone()[0] == 0


def test_an_admin_session_needs_the_csrf_header(server, open_page):
    job = server.admin.request("POST", "/jobs", {"type": "thumbnail"}).json
    page = open_page(server.url + "/")
    log_in(page, server.secrets["ops"])
    expect(page.locator("#live")).to_have_text("live")
    answer = page.evaluate(
        "async (id) => (await (await fetch(`/jobs/${id}/cancel`, {method: 'POST'})).json()).error", job["id"]
    )
    assert answer == "csrf"
    assert server.admin.request("GET", f"/jobs/{job['id']}").json["status"] == "pending"
    cookies = page.context.cookies()
    assert [(c["name"], c["httpOnly"], c["sameSite"]) for c in cookies] == [("lazyboss_session", True, "Strict")]
    assert page.evaluate("document.cookie") == ""  # out of scripts' reach


def test_without_javascript_the_page_is_a_table_that_reloads(server, open_page):
    page = open_page(server.url + "/", java_script_enabled=False)
    log_in(page, server.secrets["ops"])  # a plain form post works without JavaScript
    expect(page.locator("#queue")).to_contain_text("No jobs yet.")
    assert page.locator("noscript meta[http-equiv=refresh]").count() == 1
    job = server.admin.request("POST", "/jobs", {"type": "thumbnail", "parameters": {"src": "b.png"}}).json
    server.admin.request("POST", "/jobs", {"type": "thumbnail"})
    server.worker.request("POST", "/jobs/attempt")
    expect(count_cell(page, "thumbnail", "pending")).to_have_text("1", timeout=10_000)  # after the next reload
    expect(row(page, "in-flight", "thumbnail")).to_contain_text("pi-1")
    assert page.locator("button[data-url]").first.is_hidden()  # actions need the script
    row(page, "in-flight", "thumbnail").locator("a[data-nav=job]").click()  # a link to the job's page
    expect(page.locator("#job")).to_contain_text('"src": "b.png"')
    assert page.url.endswith(f"/?job={job['id']}")
    page.set_viewport_size(PHONE)
    screenshot(page, "status-no-javascript-phone")


def test_after_the_server_was_away_the_page_catches_up_from_its_last_event(tmp_path, open_page):
    db, port = tmp_path / "jobs.sqlite", free_port()
    server = ServerProcess(db, port=port)
    try:
        client = server.client()
        client.request("POST", "/jobs", {"type": "before"})
        page = open_page(server.url + "/")
        expect(page.locator("#live")).to_have_text("live")
        expect(count_cell(page, "before", "pending")).to_have_text("1")
        seen = int(page.evaluate("document.body.dataset.lastEvent"))
        server.stop()
        expect(page.locator("#live")).not_to_have_text("live")
        offline = ServerProcess(db)  # another server on the file writes meanwhile
        offline.client().request("POST", "/jobs", {"type": "meanwhile"})
        offline.stop()
        server = ServerProcess(db, port=port)
        expect(page.locator("#live")).to_have_text("live", timeout=10_000)
        expect(count_cell(page, "meanwhile", "pending")).to_have_text("1", timeout=5_000)
        # The stream resumed after the last event it had seen: the one written meanwhile came over it.
        expect(page.locator("body")).to_have_attribute("data-last-event", str(seen + 1))
    finally:
        server.stop()


def test_a_realistic_queue_shows_as_the_api_counts_it(live, open_page):
    """Also the screenshot in the README: the queue of a small box, made through the API."""
    admin = Client(live.url)
    kinds = {"thumbnail": 180, "email": 64, "backup": 7, "report-pdf": 23, "feed-poll": 41}
    batch = [{"type": kind, "parameters": {"n": n}} for kind, count in kinds.items() for n in range(count)]
    batch += [{"type": "report-pdf", "parameters": {"month": month}, "hold": True} for month in range(1, 4)]
    admin.request("POST", "/jobs", batch)
    workers = {name: Client(live.url, user=f"{name}:") for name in ("pi-kitchen", "pi-garage", "nas")}
    for worker in workers.values():
        for kind, count in (("thumbnail", 13), ("email", 5), ("report-pdf", 2), ("feed-poll", 4)):
            for _ in range(count):
                report(worker, worker.request("POST", f"/jobs/attempt?type={kind}").json, "result", {"ok": True})
    errors = [
        ("report-pdf", {"return_code": 1, "stderr": "wkhtmltopdf: cannot connect to X server\n"}),
        ("email", {"error": "smtp", "detail": "550 5.1.1 <ops@example.org>: mailbox unavailable"}),
        ("thumbnail", {"return_code": 137, "signal": 9, "stderr": "convert: memory allocation failed\n"}),
    ]
    for (kind, error), worker in zip(errors, workers.values()):
        admin.request("POST", "/jobs", {"type": kind, "max_attempts": 1, "priority": 9})
        report(worker, worker.request("POST", f"/jobs/attempt?type={kind}").json, "error", error)
    running = [("pi-kitchen", "thumbnail", 72), ("pi-garage", "thumbnail", 35), ("nas", "backup", 18)]
    running += [("pi-kitchen", "report-pdf", 90), ("pi-garage", "email", None)]
    for name, kind, percent in running:
        job = workers[name].request("POST", f"/jobs/attempt?type={kind}").json
        if percent is not None:
            chunk = (1, "log_chunk", f"{kind} job {job['id']} on {name}: step 3 of 4")
            report(workers[name], job, "progress", progress(chunk, (2, "percent", percent)))
    admin.request(
        "PUT", "/schedules/nightly-backup", {"type": "backup", "every": "0 3 * * *", "timezone": "Europe/Berlin"}
    )
    admin.request("PUT", "/schedules/feeds", {"type": "feed-poll", "every": "10 minutes"})
    admin.request("PUT", "/types/email", {"paused": True})

    page = open_page(live.url + "/", viewport={"width": 1200, "height": 1000})
    expect(page.locator("#live")).to_have_text("live")
    totals = admin.request("GET", "/stats").json["jobs"]
    footer = [page.locator("#queue tfoot td").nth(column).inner_text() for column in range(1, 7)]
    assert footer == [f"{totals[status]:,}" for status in lazyboss.JOB_STATUSES]
    assert page.locator("#in-flight tbody tr").count() == 5 and page.locator("#failures tbody tr").count() == 3
    expect(row(page, "failures", "email")).to_contain_text("550 5.1.1 <ops@example.org>: mailbox unavailable")
    expect(row(page, "failures", "report-pdf")).to_contain_text("exit 1: wkhtmltopdf: cannot connect to X server")
    expect(row(page, "in-flight", "backup").locator("progress")).to_have_attribute("value", "18")
    assert page.locator("#workers tbody tr").count() == 3 and page.locator("#schedules tbody tr").count() == 2
    expect(row(page, "queue", "email")).to_contain_text("paused")
    screenshot(page, "status-page")
