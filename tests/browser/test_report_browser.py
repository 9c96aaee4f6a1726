"""The HTML report in headless chromium: portfolio, sorting, filters, search, account pages, safety."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from pes_ml.report.sample import HOSTILE_ACCOUNT_NAME, HOSTILE_EVENT_NAME, HOSTILE_SEGMENT

pytestmark = pytest.mark.browser

ROWS = "#portfolio tbody tr"


def open_portfolio(page: Any, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("html[data-ready=portfolio]")


def column(page: Any, selector: str) -> list[str]:
    return page.eval_on_selector_all(f"{ROWS} {selector}", "cells => cells.map(c => c.textContent)")


def pes_values(page: Any) -> list[float]:
    return [float(v) for v in column(page, "td.pes")]


def test_portfolio_loads_summary_and_one_page_of_rows(page: Any, server: str, artifacts: Path) -> None:
    open_portfolio(page, server + "index.html")

    assert page.locator(ROWS).count() == 50
    assert page.locator("#most-at-risk tbody tr").count() == 5
    assert page.locator("#row-count").text_content() == "Showing 1–50 of 60 accounts"
    assert page.locator("#page-info").text_content() == "Page 1 of 2"
    assert pes_values(page) == sorted(pes_values(page))  # riskiest first by default
    page.screenshot(path=str(artifacts / "index.png"), full_page=True)

    page.click("#next-page")
    assert page.locator(ROWS).count() == 10


def test_sorting_by_pes_reorders_rows(page: Any, server: str) -> None:
    open_portfolio(page, server + "index.html")
    before = pes_values(page)

    page.click("th[data-key=pes] button")
    after = pes_values(page)

    assert after == sorted(after, reverse=True)
    assert after[0] > before[0]
    assert page.get_attribute("th[data-key=pes]", "aria-sort") == "descending"

    page.click("th[data-key=churn] button")  # another column: highest churn probability first
    churn = [float(v.rstrip("%")) for v in column(page, "td:nth-child(6)")]
    assert churn == sorted(churn, reverse=True)


def test_tier_filter_shows_only_that_tier(page: Any, server: str) -> None:
    open_portfolio(page, server + "index.html")
    expected = int(page.text_content("[data-tier-count=watch]"))

    page.select_option("#tier-filter", "watch")

    assert set(column(page, ".tier")) == {"Watch"}
    assert page.locator(ROWS).count() == expected
    assert f"of {expected} matching accounts" in page.text_content("#row-count")


def test_segment_filter_handles_a_hostile_segment_name(page: Any, server: str) -> None:
    open_portfolio(page, server + "index.html")

    page.select_option("#segment-filter", HOSTILE_SEGMENT)

    assert set(column(page, "td:nth-child(2)")) == {HOSTILE_SEGMENT}


def test_search_finds_an_account_by_name_or_id(page: Any, server: str) -> None:
    open_portfolio(page, server + "index.html")

    page.fill("#search", "acc-000042")
    expect(page.locator(ROWS)).to_have_count(1)
    assert page.get_attribute(ROWS, "data-id") == "acc-000042"

    page.fill("#search", "ACME <SCRIPT>")
    expect(page.locator(ROWS)).to_have_attribute("data-id", "acc-000000")
    assert page.locator(ROWS).count() == 1

    page.fill("#search", "no such account")
    expect(page.locator(ROWS)).to_have_count(0)
    assert page.text_content("#row-count") == "No account matches."


def test_clicking_an_account_opens_its_page_with_trend_and_reasons(
    page: Any, server: str, artifacts: Path
) -> None:
    open_portfolio(page, server + "index.html")
    first = page.locator(f"{ROWS} a.account").first
    name = first.text_content()

    first.click()
    page.wait_for_selector("html[data-ready=account]")

    assert page.url.startswith(server + "account.html#")
    assert page.text_content("#acct-name") == name
    assert page.locator("#trend").is_visible()
    assert page.locator("#trend circle").count() >= 2
    assert page.locator("#trend polyline").count() >= 1
    assert page.locator("#reasons li").count() == 3
    assert page.locator("#reasons li").first.is_visible()
    assert "churn risk" in page.text_content("#reasons li")
    assert page.locator("#groups rect").count() >= 5
    assert page.text_content("#changed").startswith("PES ")
    assert page.locator("#features tbody tr").count() == 6
    page.screenshot(path=str(artifacts / "account.png"), full_page=True)

    page.go_back()  # the portfolio keeps its place
    page.wait_for_selector("html[data-ready=portfolio]")
    assert page.locator(ROWS).count() == 50


def test_hostile_names_show_literally_and_run_no_script(
    page_without_csp: Any, server: str, watch: Any
) -> None:
    # The report's CSP is bypassed: escaping alone must keep the data from running.
    page = page_without_csp
    page.add_init_script("window.__pwned = 0; window.alert = function () { window.__pwned += 1; };")
    open_portfolio(page, server + "index.html")
    page.fill("#search", "acc-000000")
    expect(page.locator(ROWS)).to_have_count(1)

    assert page.text_content(f"{ROWS} a.account") == HOSTILE_ACCOUNT_NAME
    assert page.locator("#segment-filter option", has_text='Mid "market"').text_content() == HOSTILE_SEGMENT
    assert HOSTILE_EVENT_NAME in page.text_content("body")
    assert page.evaluate("[document.scripts.length, document.images.length, window.__pwned]") == [2, 0, 0]

    page.click(f"{ROWS} a.account")
    page.wait_for_selector("html[data-ready=account]")
    assert page.text_content("#acct-name") == HOSTILE_ACCOUNT_NAME
    assert page.title().startswith(HOSTILE_ACCOUNT_NAME)
    # 2 inline scripts + the shard loaded by the viewer
    assert page.evaluate("[document.scripts.length, document.images.length, window.__pwned]") == [3, 0, 0]

    page.goto(server + "model.html")
    assert "rules <script>alert(4)</script>" in page.text_content("body")
    assert page.evaluate("[document.scripts.length, document.images.length, window.__pwned]") == [0, 0, 0]
    assert watch.dialogs == []


def test_model_page_shows_how_to_read_evaluation_and_calibration(
    page: Any, server: str, artifacts: Path
) -> None:
    page.goto(server + "model.html")

    assert page.locator("#how-to-read").is_visible()
    assert "every 10 points up halves the odds of churning" in page.text_content(".explain").lower()
    assert page.locator("svg .curve").count() == 2
    assert page.locator("tr.model-row").count() == 2
    page.screenshot(path=str(artifacts / "model.png"), full_page=True)


def test_report_opens_from_the_file_system(page: Any, browser_report: Path, artifacts: Path) -> None:
    open_portfolio(page, (browser_report / "index.html").as_uri())
    assert page.locator(ROWS).count() == 50

    page.locator(f"{ROWS} a.account").first.click()
    page.wait_for_selector("html[data-ready=account]")
    assert page.locator("#reasons li").count() == 3

    page.goto((browser_report / "account.html").as_uri() + "#no-such-account")
    expect(page.locator("#account-status")).to_contain_text("No account with id")
    page.screenshot(path=str(artifacts / "account-file-url-missing.png"))


def test_pages_request_nothing_beyond_the_report_folder(page: Any, server: str, watch: Any) -> None:
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    open_portfolio(page, server + "index.html")
    page.locator(f"{ROWS} a.account").first.click()
    page.wait_for_selector("html[data-ready=account]")
    page.goto(server + "model.html")

    assert requested
    assert all(url.startswith(server) for url in requested), requested
    assert watch.external == []
