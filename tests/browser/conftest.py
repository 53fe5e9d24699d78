"""Real-browser fixtures: Debian's Chromium driven by Playwright (sync API), fully offline.

On a failed test the page's screenshot and console log are saved under ``test-artifacts/`` at the
repository root and their paths are added to the test's report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
_CONSOLE = pytest.StashKey[list[str]]()

# A bot answer goes through the real NLU: allow more than Playwright's default 5 s.
expect.set_options(timeout=15_000)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """On a failed test, save what the browser showed while the page is still open.

    Saved here rather than in the page fixture's teardown so that the paths appear in the
    failure's own report section.
    """
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and page is not None:
        report.sections.append(("browser artifacts", _save_artifacts(item, page)))
    return report


def _save_artifacts(item: pytest.Item, page: Page) -> str:
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", item.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "console.log"
    log.write_text("\n".join(item.stash.get(_CONSOLE, [])) + "\n", encoding="utf-8")
    lines = [f"console log: {log}"]
    try:
        shot = folder / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        lines.append(f"screenshot:  {shot}")
    except Exception as error:  # a crashed page has no screenshot; the log is still worth having
        lines.append(f"screenshot failed: {error}")
    return "\n".join(lines)


# Module scope, not session: Playwright's sync API keeps an event loop running in the main
# thread while it is open, and later tests that call asyncio.run() would find it there.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium (never a downloaded one: the machine is offline)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (Debian's chromium package)")
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def locale() -> str:
    """The browser's language; a test overrides it with ``@pytest.mark.parametrize("locale", [...])``."""
    return "en-US"


@pytest.fixture
def page(browser: Browser, locale: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context (own localStorage, so a new visitor), its console recorded.

    An uncaught error in the page's script fails the test even if every assertion passed.
    """
    context = browser.new_context(locale=locale, viewport={"width": 420, "height": 800})
    context.set_default_timeout(15_000)
    page = context.new_page()
    console = request.node.stash.setdefault(_CONSOLE, [])
    uncaught: list[str] = []

    def record(message: ConsoleMessage) -> None:
        console.append(f"[{message.type}] {message.text}")

    def record_error(error: Exception) -> None:
        console.append(f"[pageerror] {error}")
        uncaught.append(str(error))

    page.on("console", record)
    page.on("pageerror", record_error)
    yield page
    context.close()
    if uncaught:
        pytest.fail("uncaught errors in the page:\n" + "\n".join(uncaught))
