"""The score threshold of the web API and page (issue 19, item 3): min_score, no_good_match."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from lookalike.web import Gallery
from tests.web.test_web import PER_COLOUR, Running, build_collection
from tests.web.test_web_browser import api, browser, shown_ids  # noqa: F401 - the browser fixture


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    _, coll = build_collection(tmp_path_factory.mktemp("threshold"))
    server = Running(Gallery(coll, labels="folders"))
    yield server
    server.stop()


def test_the_api_leaves_out_results_under_min_score_and_says_no_good_match(running):
    full = api(running, "/api/query?id=1&k=6")
    assert all("probability" in r for r in full["results"]) and full["calibration"] is None
    assert not full["no_good_match"] and full["left_out"] == 0
    cut = full["results"][2]["score"]
    some = api(running, f"/api/query?id=1&k=6&min_score={cut}")
    assert [r["id"] for r in some["results"]] == [r["id"] for r in full["results"][:3]]
    assert some["left_out"] == 3 and some["min_score"] == cut
    none = api(running, "/api/query?id=1&k=6&min_score=1.5")
    assert none["results"] == [] and none["no_good_match"] and none["left_out"] == 6
    status, _, body = running.request("GET", "/api/query?id=1&min_score=high")
    assert status == 400 and "min_score must be a number" in body["error"]


def test_the_page_hides_results_under_the_minimum_and_says_no_good_match(running, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"http://127.0.0.1:{running.port}/")
    page.wait_for_selector("body[data-ready='1']")
    page.locator("#gallery .tile").first.click()
    page.wait_for_selector("#results .tile")
    assert page.locator("#results .tile").count() == 8
    assert page.locator("#no-match").is_hidden()
    scores = [
        float(s)
        for s in page.locator("#results .tile").evaluate_all("ts => ts.map(t => t.dataset.score)")
    ]
    cut = (scores[2] + scores[3]) / 2
    page.fill("#min-score", f"{cut:.6f}")
    expect(page.locator("#results .tile")).to_have_count(3)
    assert page.locator("#no-match").is_hidden()
    page.fill("#min-score", "0.999999")
    expect(page.locator("#results .tile")).to_have_count(0)
    expect(page.locator("#no-match")).to_contain_text("No good match: no result reaches")
    page.fill("#min-score", "")
    expect(page.locator("#results .tile")).to_have_count(min(8, 3 * PER_COLOUR))
    assert page.locator("#no-match").is_hidden() and len(shown_ids(page)) == 8
    assert errors == []
    page.close()
