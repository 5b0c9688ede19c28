"""Browser tests: Debian's chromium, headless, driven by Playwright for Python against a hub on PostgreSQL.

The hub runs in this process behind a real socket (``tests.http_server.serve``); the
browser is the system's ``/usr/bin/chromium`` (``scripts/ensure-chromium.sh`` installs it
for ``make test``), never a browser Playwright downloads. When chromium is missing or
cannot start, every test here fails saying so: a browser test that silently skips would
prove nothing. Each step leaves a screenshot in ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import pytest

from alliance.extensions import hub_state
from tests.console_support import Alliance, add_staff, build_alliance
from tests.http_server import serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
STAFF = (("fiona", "Fiona Finance", "finance"), ("paco", "Paco Manager", "partner_manager"),
         ("cass", "Cass Service", "customer_service"))


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless chromium for the session; a clear failure when it cannot start."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as error:
        pytest.fail(f"Playwright for Python is not installed ({error}); run 'make install' (the test extra has it)")
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run 'bash scripts/ensure-chromium.sh' (Debian's chromium package)")
    manager = sync_playwright().start()
    try:
        launched = manager.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    except Error as error:
        manager.stop()
        pytest.fail(f"chromium at {CHROMIUM} did not start: {error}")
    try:
        yield launched
    finally:
        launched.close()
        manager.stop()


@pytest.fixture
def console_hub(pg_app) -> Iterator[tuple[str, Alliance]]:  # type: ignore[no-untyped-def]
    """A hub on PostgreSQL with three months of activity and one login per role, served on a real socket."""
    hub = hub_state(pg_app)
    made = build_alliance(hub)
    for username, display_name, role in STAFF:
        add_staff(hub, username, role, display_name=display_name)
    with serve(pg_app) as base_url:
        yield base_url, made


@pytest.fixture
def page(browser, request):  # type: ignore[no-untyped-def]
    """A fresh browser context (its own cookies) and page for one test."""
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


class Screenshots:
    """Numbered screenshots of one test's steps."""

    def __init__(self, page, test_name: str) -> None:  # type: ignore[no-untyped-def]
        self.page = page
        self.prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", test_name)
        self.count = 0
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(self, step: str) -> Path:
        self.count += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 0
        return path


@pytest.fixture
def shots(page, request) -> Screenshots:  # type: ignore[no-untyped-def]
    return Screenshots(page, request.node.name)
