"""The status page in a real browser, fed hostile job data while it watches: markup in parameters, errors,
log chunks (appended by the page's script as they stream in) and an open-mode worker's name shows as text,
never as elements or code. (The page rendered by the server is checked in-process in test_status_page.py.)"""

import os

import pytest

from support import Client
from test_status_browser import CHROMIUM, browser, open_page, progress, report  # noqa: F401 - fixtures

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no {CHROMIUM}")]

MARKUP = '"><img src=x id=injected onerror="window.injected=1"><script>window.injected=2</script></pre></table>'


def test_markup_arriving_live_shows_as_text(live, open_page):  # noqa: F811 - the fixture imported above
    client = Client(live.url)
    job = client.request("POST", "/jobs", {"type": "t", "parameters": {"src": MARKUP}}).json
    page = open_page(f"{live.url}/?job={job['id']}")
    expect(page.locator("#live")).to_have_text("live")
    # Whatever the page puts in and takes out again (a swap replaces the log): note any element the markup made.
    page.evaluate(
        """new MutationObserver((changes) => {
             for (const change of changes) for (const node of change.addedNodes)
               if (node.nodeType === 1 && (node.matches("#injected, script") || node.querySelector("#injected")))
                 window.injected = "an element";
           }).observe(document, {subtree: true, childList: true})"""
    )
    worker = Client(live.url, user=MARKUP.replace(":", "") + ":")  # in open mode, the Basic user is the name
    claimed = worker.request("POST", "/jobs/attempt?type=t").json
    expect(page.locator("#job-log")).to_be_attached()
    assert (
        report(worker, claimed, "progress", progress((1, "log_chunk", MARKUP), (2, "log_chunk", "\nend"))).status == 202
    )
    expect(page.locator("#job-log")).to_have_text(MARKUP + "\nend")
    assert report(worker, claimed, "error", {"message": MARKUP}).status == 201
    expect(page.locator("#job")).to_contain_text('"message": "\\"><img')
    expect(page.locator("#workers")).to_contain_text('"><img src=x')
    assert page.evaluate("window.injected") is None
    assert page.locator("#injected").count() == 0 and page.locator("script").count() == 1
