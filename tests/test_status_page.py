"""The status page at GET / (in-process): what it shows, its caps, and how a browser logs in.

The browser itself (live updates, clicks, the phone layout) is in test_status_browser.py.
"""

import base64
import hashlib
import re
import sqlite3

import pytest
import webtest

import lazyboss
from support import run_cli

HTML = {"Accept": "text/html,application/xhtml+xml"}


def submit(store, job_type="thumbnail", parameters=None, **fields):
    (view,) = store.submit_jobs([lazyboss.JobSpec(type=job_type, parameters=parameters or {}, **fields)])
    return lazyboss.json.loads(view)


def run_and_fail(store, job_type, error, worker="w1"):
    job = submit(store, job_type, max_attempts=1)
    claimed = store.claim_next_job(worker, [job_type])
    store.fail_attempt(claimed["id"], claimed["attempt"], worker, error)
    return job["id"]


def page(app, path="/", **kwargs):
    response = app.get(path, headers={**HTML, **kwargs.pop("headers", {})}, **kwargs)
    return response


def rows(response, card):
    """The text of each body row of a card's table."""
    return [" ".join(row.get_text(" ", strip=True).split()) for row in response.html.select(f"#{card} tbody tr")]


@pytest.fixture
def tokens(store):
    return {role: store.create_token(f"the-{role}", role) for role in lazyboss.ROLES}


def login(app, secret, **kwargs):
    """POST the login form; return the response and the session cookie's value (the jar is left empty)."""
    response = app.post("/login", {"token": secret}, headers=HTML, **kwargs)
    app.cookiejar.clear()
    cookie = re.match(r"lazyboss_session=([^;]*)", response.headers.get("Set-Cookie", ""))
    return response, cookie and cookie.group(1)


def with_cookie(session, **headers):
    return {"Cookie": f"lazyboss_session={session}", **headers}


def csrf_of(app, session):
    response = page(app, headers=with_cookie(session))
    return response.html.select_one("meta[name=csrf-token]")["content"]


# -- what the page shows


def test_a_browser_gets_the_page_and_anyone_else_a_json_404(app):
    response = page(app)
    assert response.status == "200 OK" and response.content_type == "text/html"
    assert response.html.select_one("#queue h2").get_text().startswith("Queue")
    refresh = response.html.select_one("noscript meta[http-equiv=refresh]")
    assert refresh["content"] == "5"  # without JavaScript: a table that reloads itself
    assert "script-src 'sha256-" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["Cache-Control"] == "no-store"
    assert not response.html.select("form[action='/login']")  # open mode: no login
    curl = app.get("/", headers={"Accept": "*/*"}, status=404)
    assert curl.json["error"] == "not_found" and "text/html" in curl.json["detail"]


def test_the_page_shows_queue_jobs_in_flight_failures_workers_schedules_and_paused_types(app, store, clock):
    for number in range(3):
        submit(store, "thumbnail", {"src": f"{number}.png"})
    submit(store, "email")
    running = store.claim_next_job("pi-1", ["thumbnail"])
    store.record_progress(running["id"], running["attempt"], "pi-1", [lazyboss.ProgressItem(1, "percent", "40")])
    failed = run_and_fail(store, "report", {"error": "crashed", "detail": "disk full"}, worker="pi-2")
    store.saw_worker("pi-2")
    store.put_schedule("nightly", "backup", {}, lazyboss.parse_every("0 3 * * *", "Europe/Berlin"))
    store.put_type("email", {"paused": 1})
    clock.advance(12)
    store.saw_worker("pi-1")

    response = page(app)
    assert rows(response, "queue") == [
        "email paused 0 1 0 0 0 0 Resume",
        "report 0 0 0 0 1 0 Pause",
        "thumbnail 0 2 1 0 0 0 Pause",
    ]
    assert " ".join(response.html.select_one("#queue tfoot").get_text(" ").split()) == "all 0 3 1 0 1 0"
    assert rows(response, "in-flight") == [f"{running['id']} thumbnail pi-1 1 of 3 40 % 12 s Cancel"]
    assert response.html.select_one("#in-flight progress")["value"] == "40"
    assert rows(response, "failures") == [f"{failed} report disk full 12 s ago Retry"]
    assert rows(response, "workers")[0] == f"pi-1 0 s ago {running['id']}"
    assert rows(response, "workers")[1] == "pi-2 12 s ago idle"
    (schedule,) = rows(response, "schedules")
    assert schedule.startswith("nightly backup 0 3 * * * Europe/Berlin in ") and schedule.endswith("Run now")
    assert response.html.select_one("#paused").get_text(" ", strip=True) == "Paused (never handed out): email Resume"
    assert response.html.body["data-last-event"] == str(store.last_event_id())
    buttons = {button["data-label"]: button for button in response.html.select("button[data-url]")}
    assert buttons["Pause type thumbnail"]["data-method"] == "PUT"
    assert buttons["Pause type thumbnail"]["data-body"] == '{"paused":true}'
    assert buttons[f"Cancel job {running['id']}"]["data-url"] == f"/jobs/{running['id']}/cancel"
    assert buttons["Run schedule nightly now"]["data-url"] == "/schedules/nightly/run"


def test_lists_are_capped_and_their_totals_come_from_the_database(app, store):
    store.submit_jobs([lazyboss.JobSpec(type="bulk", max_attempts=1) for _ in range(200)])
    for number in range(130):
        store.claim_next_job(f"w{number % 40}", ["bulk"])
        store.saw_worker(f"w{number % 40}")
    for _ in range(30):
        job = store.claim_next_job("w-fail", ["bulk"])
        store.fail_attempt(job["id"], job["attempt"], "w-fail", {"detail": "no"})
    for number in range(25):
        store.put_schedule(f"s{number:02}", "tick", {}, lazyboss.parse_every("1 hour"))

    response = page(app)
    assert len(rows(response, "in-flight")) == 50
    assert "the first 50 of 130" in response.html.select_one("#in-flight h2").get_text()
    assert len(rows(response, "failures")) == 10
    assert "the first 10 of 30" in response.html.select_one("#failures h2").get_text()
    assert len(rows(response, "workers")) == 20
    assert "the first 20 of 40" in response.html.select_one("#workers h2").get_text()
    assert len(rows(response, "schedules")) == 20
    assert rows(response, "queue") == ["bulk 0 40 130 0 30 0 Pause"]


def test_a_job_in_detail_parameters_result_attempts_and_its_log(app, store):
    job = submit(store, "thumbnail", {"src": "<script>alert(1)</script>"})
    first = store.claim_next_job("w1")
    store.fail_attempt(job["id"], first["attempt"], "w1", {"detail": "flaky"})
    store.clock.advance(60)  # past the back-off: the second attempt
    second = store.claim_next_job("w2")
    store.record_progress(
        job["id"],
        second["attempt"],
        "w2",
        [lazyboss.ProgressItem(1, "log_chunk", "resizing <b>\n"), lazyboss.ProgressItem(2, "percent", "50")],
    )

    response = page(app, f"/?job={job['id']}")
    detail = response.html.select_one("#job")
    assert detail["data-job"] == job["id"]
    text = detail.get_text(" ")
    assert "processing" in text and "<script>alert(1)</script>" in text  # shown as text ...
    assert "<script>alert" not in response.text  # ... never as markup
    assert [" ".join(row.get_text(" ", strip=True).split()) for row in detail.select("tbody tr")] == [
        "1 w1 failed 60 s ago 60 s ago flaky",
        "2 w2 processing 0 s ago –",
    ]
    log = detail.select_one("#job-log")
    assert log.get_text() == "resizing <b>\n" and log["data-attempt"] == "2" and log["data-log-id"] == "2"

    store.complete_attempt(job["id"], second["attempt"], "w2", {"thumb": "a.png"})
    done = page(app, f"/?job={job['id']}").html.select_one("#job")
    assert "Result" in done.get_text() and '"thumb": "a.png"' in done.get_text()

    missing = page(app, "/?job=999").html.select_one("#job")
    assert "no job 999" in missing.get_text()
    assert page(app, "/?job=abc").html.select_one("#job").get_text().startswith("no job abc")


def test_a_long_log_shows_its_end(app, store):
    job = submit(store)
    claimed = store.claim_next_job("w1")
    chunks = [
        lazyboss.ProgressItem(number, "log_chunk", f"{number:05} " + "x" * 1000 + "\n") for number in range(1, 101)
    ]
    store.record_progress(job["id"], claimed["attempt"], "w1", chunks)
    log = page(app, f"/?job={job['id']}").html.select_one("#job-log")
    assert len(log.get_text()) == lazyboss._PAGE_LOG
    assert log.get_text().endswith("00100 " + "x" * 1000 + "\n")
    assert log["data-log-id"] == "100"


# -- logging in


def test_without_a_session_the_page_is_the_login_form_and_shows_no_data(app, store, tokens):
    submit(store, "secret-type")
    response = page(app)
    assert response.html.select_one("form[action='/login'] input[name=token][type=password]")
    assert "secret-type" not in response.text and not response.html.select("#overview")
    assert "WWW-Authenticate" not in response.headers  # the form, not the browser's Basic dialog


def test_a_wrong_token_is_refused_with_the_form_and_no_cookie(app, tokens):
    response = app.post("/login", {"token": "lb_wrong"}, headers=HTML, status=401)
    assert "Set-Cookie" not in response.headers
    assert "wrong token" in response.html.select_one("[role=alert]").get_text()
    assert response.html.select_one("form[action='/login']")
    as_json = app.post_json("/login", {"token": "lb_wrong"}, status=401)
    assert as_json.json == {"error": "unauthorized", "detail": "wrong token: no token has this secret"}
    assert app.post("/login", {"token": ""}, headers=HTML, status=422)


def test_login_trades_a_token_for_an_httponly_strict_session_cookie_stored_hashed(app, store, tokens, db_path):
    submit(store)
    response, session = login(app, tokens["admin"], status=303)
    assert response.headers["Location"].endswith("/")
    cookie = response.headers["Set-Cookie"]
    assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"} <= {part.strip() for part in cookie.split(";")}
    assert session.startswith("lbs_") and len(session) > 40 and session != tokens["admin"]
    stored = store.db.execute("SELECT hash, token FROM sessions").fetchall()
    assert [tuple(row) for row in stored] == [(hashlib.sha256(session.encode()).hexdigest(), "the-admin")]
    if store.engine.keeps_a_file:  # nor anywhere in the file, its free pages included
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        files = b"".join(open(db_path + suffix, "rb").read() for suffix in ("", "-wal"))
        assert session.encode() not in files

    shown = page(app, headers=with_cookie(session))
    assert shown.html.select("#overview") and "the-admin" in shown.html.select_one("header").get_text()
    assert shown.html.select("button[data-url]")  # an admin gets the buttons
    csrf = shown.html.select_one("meta[name=csrf-token]")["content"]
    assert len(csrf) == 64 and csrf not in cookie


def test_a_session_reads_but_a_change_needs_the_csrf_header(app, store, tokens):
    job = submit(store)
    _, session = login(app, tokens["admin"])
    csrf = csrf_of(app, session)
    assert app.get("/jobs", headers=with_cookie(session)).json["jobs"][0]["id"] == job["id"]

    refused = app.post(f"/jobs/{job['id']}/cancel", headers=with_cookie(session), status=403)
    assert refused.json["error"] == "csrf"
    wrong = app.post(
        f"/jobs/{job['id']}/cancel", headers=with_cookie(session, **{"X-CSRF-Token": "0" * 64}), status=403
    )
    assert wrong.json["error"] == "csrf"
    other_session = login(app, tokens["admin"])[1]
    borrowed = with_cookie(session, **{"X-CSRF-Token": csrf_of(app, other_session)})
    assert app.post(f"/jobs/{job['id']}/cancel", headers=borrowed, status=403).json["error"] == "csrf"
    foreign = with_cookie(session, **{"X-CSRF-Token": csrf, "Origin": "http://evil.example"})
    assert app.post(f"/jobs/{job['id']}/cancel", headers=foreign, status=403).json["error"] == "cross_origin"
    assert store.get_job(job["id"])["status"] == "pending"

    same_site = with_cookie(session, **{"X-CSRF-Token": csrf, "Origin": "http://localhost:80"})
    assert app.post(f"/jobs/{job['id']}/cancel", headers=same_site).json["status"] == "cancelled"
    paused = app.put_json("/types/thumbnail", {"paused": True}, headers=with_cookie(session, **{"X-CSRF-Token": csrf}))
    assert paused.json["paused"] is True


def test_a_client_session_is_read_only(app, store, tokens):
    job = submit(store)
    _, session = login(app, tokens["client"])
    shown = page(app, headers=with_cookie(session))
    assert shown.html.select("#overview") and not shown.html.select("button[data-url]")
    csrf = shown.html.select_one("meta[name=csrf-token]")["content"]
    refused = app.post(f"/jobs/{job['id']}/cancel", headers=with_cookie(session, **{"X-CSRF-Token": csrf}), status=403)
    assert refused.json["error"] == "forbidden" and "client" in refused.json["detail"]
    assert store.get_job(job["id"])["status"] == "pending"


def test_the_authorization_header_works_as_before_and_wins_over_a_cookie(app, store, tokens):
    job = submit(store)
    _, session = login(app, tokens["admin"])
    as_client = with_cookie(session, Authorization=f"Bearer {tokens['client']}")
    assert app.post(f"/jobs/{job['id']}/cancel", headers=as_client, status=403).json["error"] == "forbidden"
    as_admin = {"Authorization": f"Bearer {tokens['admin']}"}  # no cookie, no CSRF header: the API as ever
    assert app.post(f"/jobs/{job['id']}/cancel", headers=as_admin).json["status"] == "cancelled"
    assert (
        app.get("/jobs", headers=with_cookie("lbs_made-up"), status=401).json["detail"].startswith("the session ended")
    )


def test_revoking_a_token_ends_its_sessions_at_once(app, store, tokens):
    _, session = login(app, tokens["worker"])
    assert app.get("/jobs", headers=with_cookie(session)).status_int == 200
    store.revoke_token("the-worker")
    assert app.get("/jobs", headers=with_cookie(session), status=401).json["error"] == "unauthorized"
    again = page(app, headers=with_cookie(session))
    assert again.html.select_one("form[action='/login']") and "Max-Age=0" in again.headers["Set-Cookie"]
    assert store.db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 0


def test_sessions_expire(store, clock, tokens):
    app = webtest.TestApp(lazyboss.make_app(store, lazyboss.Config(session_ttl="30m")))
    response, session = login(app, tokens["client"])
    assert "Max-Age=1800" in response.headers["Set-Cookie"]
    clock.advance(1799)
    assert app.get("/jobs", headers=with_cookie(session)).status_int == 200
    clock.advance(2)
    assert app.get("/jobs", headers=with_cookie(session), status=401)
    login(app, tokens["client"])  # a login clears away the expired sessions
    assert store.db.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1


def test_logout_ends_the_session(app, store, tokens):
    _, session = login(app, tokens["admin"])
    response = app.post("/logout", headers=with_cookie(session, **HTML), status=303)
    assert "lazyboss_session=;" in response.headers["Set-Cookie"] and "Max-Age=0" in response.headers["Set-Cookie"]
    assert app.get("/jobs", headers=with_cookie(session), status=401)


def test_a_login_from_another_site_is_refused(app, tokens):
    response = app.post(
        "/login", {"token": tokens["admin"]}, headers={**HTML, "Origin": "http://evil.example"}, status=403
    )
    assert "Set-Cookie" not in response.headers and "evil.example" in response.text


# -- open mode


def test_open_mode_needs_no_login_and_refuses_other_sites_and_other_host_names(app, store):
    job = submit(store)
    assert app.post("/login", {"token": "x"}, headers=HTML, status=409)
    foreign = app.post(f"/jobs/{job['id']}/cancel", headers={"Origin": "http://evil.example"}, status=403)
    assert foreign.json["error"] == "cross_origin"
    rebound = app.get("/jobs", headers={"Host": "evil.example:8080"}, status=403)  # DNS rebinding
    assert rebound.json["error"] == "host"
    assert store.get_job(job["id"])["status"] == "pending"
    for host in ("127.0.0.1:8080", "localhost", "[::1]:8080"):
        assert app.get("/jobs", headers={"Host": host}).status_int == 200
    own = {"Origin": "http://127.0.0.1:8080", "Host": "127.0.0.1:8080"}
    assert app.post(f"/jobs/{job['id']}/cancel", headers=own).json["status"] == "cancelled"


def test_the_session_lifetime_flag_is_checked():
    for wrong in ("forever", "0s"):
        result = run_cli("--session-ttl", wrong)
        assert result.returncode == 2 and "--session-ttl" in result.stderr


def test_the_script_and_style_are_readable_and_allowed_by_their_hashes():
    policy = lazyboss._PAGE_HEADERS["Content-Security-Policy"]
    for text in (lazyboss._PAGE_SCRIPT, lazyboss._PAGE_STYLE):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
        assert max(len(line) for line in text.splitlines()) <= 120  # not minified


def test_the_page_answers_304_until_something_it_shows_changes(app, store, clock):
    submit(store)
    tag = page(app).headers["ETag"]
    assert page(app, headers={"If-None-Match": tag}, status=304).body == b""
    clock.advance(5)
    assert page(app, headers={"If-None-Match": tag}, status=304)  # times age in the browser
    store.put_type("email", {"paused": 1})  # no job event, yet the page shows it
    changed = page(app, headers={"If-None-Match": tag})
    assert changed.status_int == 200 and changed.headers["ETag"] != tag
    assert changed.html.body["data-tag"] == changed.headers["ETag"]
    for change in (lambda: store.saw_worker("w9"), lambda: submit(store)):
        tag = page(app).headers["ETag"]
        change()
        assert page(app, headers={"If-None-Match": tag}).status_int == 200
    assert page(app, "/?job=1", headers={"If-None-Match": tag}).status_int == 200


# -- counts kept by the database


def counted_by_hand(store):
    counts = {}
    for job_type, status, number in store.db.execute("SELECT type, status, COUNT(*) FROM jobs GROUP BY 1, 2"):
        counts.setdefault(job_type, {})[status] = number
    return counts


def test_counts_follow_every_change_a_job_goes_through(store, clock):
    jobs = [submit(store, job_type, max_attempts=2, timeout=10) for job_type in ("a", "b", "a", "c", "a")]
    assert store.submit_jobs([lazyboss.JobSpec(type="a")], "key") == store.submit_jobs(
        [lazyboss.JobSpec(type="a")], "key"
    )
    done = store.claim_next_job("w", ["a"])
    store.complete_attempt(done["id"], done["attempt"], "w", None)
    failing = store.claim_next_job("w", ["b"])
    store.fail_attempt(failing["id"], failing["attempt"], "w", "once")  # back to pending
    store.cancel_job(jobs[3]["id"])
    store.retry_job(jobs[3]["id"])
    store.claim_next_job("w", ["a"])
    clock.advance(30)
    assert store.expire_stale_attempts() == 1  # its lease ran out
    store.cancel_job(jobs[4]["id"])
    assert (
        store.count_jobs()
        == counted_by_hand(store)
        == {
            "a": {"pending": 2, "done": 1, "cancelled": 1},
            "b": {"pending": 1},
            "c": {"pending": 1},
        }
    )
    clock.advance(8 * 86400)
    assert store.delete_finished_jobs(7 * 86400) == 2
    assert (
        store.count_jobs() == counted_by_hand(store) == {"a": {"pending": 2}, "b": {"pending": 1}, "c": {"pending": 1}}
    )
    assert store.get_type("a")["jobs"]["pending"] == 2


def test_a_file_from_before_the_counts_gets_them_counted(db_path, clock):
    with sqlite3.connect(db_path) as db:  # a file of schema 4, by a lazyboss that did not count
        for migration in lazyboss._MIGRATIONS[:4]:
            migration(db) if callable(migration) else db.executescript(migration)
        db.execute("PRAGMA user_version = 4")
        db.executemany(
            """INSERT INTO jobs (type, status, parameters, priority, run_at, max_attempts, timeout,
                   backoff_base, backoff_max, created_at, updated_at)
               VALUES ('old', 'pending', '{}', 0, 0, 3, 300, 1, 600, 0, 0)""",
            [()] * 2,
        )
    upgraded = lazyboss.Store(db_path, clock=clock)
    assert upgraded.count_jobs() == {"old": {"pending": 2}}
    submit(upgraded, "old")
    assert upgraded.count_jobs() == {"old": {"pending": 3}}
    upgraded.close()
