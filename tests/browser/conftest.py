"""Browser fixtures: one headless Debian chromium per session, the report served from 127.0.0.1.

Every page is opened in a fresh context whose router lets through only requests to the
local server (or file:// URLs) and records and aborts anything else; a test fails if
any such request happened. Screenshots go to test-artifacts/report/ (git-ignored).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pes_ml.report import build_report
from pes_ml.report.sample import write_sample_store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--headless",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def browser_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report folder of a sample store: 3 runs, 60 accounts, hostile names."""
    root = tmp_path_factory.mktemp("browser-report")
    store = write_sample_store(
        root / "runs", 60, ("2024-04-01", "2024-05-01", "2024-06-01"), seed=11, hostile=True
    )
    return build_report(store, root / "site").parent


@pytest.fixture(scope="session")
def server(browser_report: Path) -> Iterator[str]:
    """The report served over HTTP on 127.0.0.1 from a thread; yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(browser_report)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One chromium for the whole session."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install the Debian package chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@dataclass
class Watch:
    """What a page did that it must not: external requests, dialogs (alert), script errors."""

    external: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def watch() -> Watch:
    return Watch()


@contextmanager
def _guarded_page(browser: Any, server: str, watch: Watch, bypass_csp: bool) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=bypass_csp)

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if url.startswith((server, "file://", "data:")):
            request_route.continue_()
        else:
            watch.external.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()

    def on_dialog(dialog: Any) -> None:
        watch.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda error: watch.errors.append(str(error)))
    yield page
    context.close()
    assert watch.external == [], f"the report made external requests: {watch.external}"
    assert watch.dialogs == [], f"a script from data ran (dialogs: {watch.dialogs})"
    assert watch.errors == [], f"script errors: {watch.errors}"


@pytest.fixture
def page(browser: Any, server: str, watch: Watch) -> Iterator[Any]:
    """A fresh page under the report's own Content-Security-Policy, limited to the local server."""
    with _guarded_page(browser, server, watch, bypass_csp=False) as guarded:
        yield guarded


@pytest.fixture
def page_without_csp(browser: Any, server: str, watch: Watch) -> Iterator[Any]:
    """A fresh page that ignores the report's CSP: escaping alone must keep data from running."""
    with _guarded_page(browser, server, watch, bypass_csp=True) as guarded:
        yield guarded


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
