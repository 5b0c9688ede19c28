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
         ("cass", "Cass Service", "customer_service"), ("ada", "Ada Admin", "admin"))


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
    context = browser.new_context(viewport=DESKTOP)
    opened = context.new_page()
    opened.set_default_timeout(15_000)
    yield opened
    context.close()


PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}
# axe-core's impact levels that fail a page; "minor" and "moderate" findings are reported, not failed.
FAILING_IMPACTS = ("serious", "critical")


def accessibility_problems(page) -> list[str]:  # type: ignore[no-untyped-def]
    """axe-core's serious and critical violations on the page as it stands, one line each (none: an empty list).

    axe-core (bundled by axe-playwright-python) runs inside the page through Playwright's
    evaluate, which the console's Content-Security-Policy does not block: the page itself
    still runs no script of ours.
    """
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"resultTypes": ["violations"],
                                       "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a",
                                                                             "wcag21aa", "best-practice"]}})
    return [f"{violation['id']} ({violation['impact']}): {violation['help']} at "
            + ", ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
            for violation in results.response["violations"] if violation["impact"] in FAILING_IMPACTS]


def sideways_overflow(page) -> int:  # type: ignore[no-untyped-def]
    """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


class Screenshots:
    """Numbered screenshots of one test's steps; ``check`` also scans the page and tries it on a phone."""

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

    def check(self, step: str) -> None:
        """A screenshot, the accessibility scan, and the same page at 390 px: no sideways scroll, scanned again."""
        self.take(step)
        problems = accessibility_problems(self.page)
        assert not problems, f"{step}: axe-core found\n" + "\n".join(problems)
        self.page.set_viewport_size(PHONE)
        try:
            overflow = sideways_overflow(self.page)
            self.take(f"{step}-phone")
            assert overflow <= 0, f"{step}: at 390 px the page is {overflow} px too wide (it scrolls sideways)"
            phone_problems = accessibility_problems(self.page)
            assert not phone_problems, f"{step} at 390 px: axe-core found\n" + "\n".join(phone_problems)
        finally:
            self.page.set_viewport_size(DESKTOP)


@pytest.fixture
def shots(page, request) -> Screenshots:  # type: ignore[no-untyped-def]
    return Screenshots(page, request.node.name)
