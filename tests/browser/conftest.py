"""Real-browser fixtures: Debian's Chromium driven by Playwright (sync API), fully offline.

On a failed test a screenshot of every page the test opened (the customer's chat, the agent's
desk...) and their console logs are saved under ``test-artifacts/`` at the repository root, and
their paths are added to the test's report.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
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
_PAGES = pytest.StashKey[dict[str, Page]]()

# A bot answer goes through the real NLU: allow more than Playwright's default 5 s.
expect.set_options(timeout=15_000)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """On a failed test, save what the browser showed while the pages are still open.

    Saved here rather than in the page fixtures' teardown so that the paths appear in the
    failure's own report section.
    """
    report = yield
    pages = item.stash.get(_PAGES, {})
    if report.when == "call" and report.failed and pages:
        report.sections.append(("browser artifacts", _save_artifacts(item, pages)))
    return report


def _save_artifacts(item: pytest.Item, pages: dict[str, Page]) -> str:
    folder = ARTIFACTS / re.sub(r"[^\w.-]+", "_", item.nodeid)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "console.log"
    log.write_text("\n".join(item.stash.get(_CONSOLE, [])) + "\n", encoding="utf-8")
    lines = [f"console log: {log}"]
    for name, page in pages.items():
        try:
            shot = folder / f"{name}.png"
            page.screenshot(path=str(shot), full_page=True)
            lines.append(f"screenshot of {name}: {shot}")
        except Exception as error:  # a crashed page has no screenshot; the log is still worth having
            lines.append(f"screenshot of {name} failed: {error}")
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


PageOpener = Callable[..., Page]


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[PageOpener]:
    """Opens pages, each in a fresh context (own storage: a new visitor, a separate agent).

    ``new_page(name, locale=..., viewport=(width, height))``. Every page's console is recorded
    (lines prefixed with its name) and screenshotted if the test fails; an uncaught error in any
    page's script fails the test even if every assertion passed.
    """
    console = request.node.stash.setdefault(_CONSOLE, [])
    pages = request.node.stash.setdefault(_PAGES, {})
    contexts = []
    uncaught: list[str] = []

    def open_page(name: str, *, locale: str = "en-US", viewport: tuple[int, int] = (420, 800)) -> Page:
        context = browser.new_context(locale=locale, viewport={"width": viewport[0], "height": viewport[1]})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()

        def record(message: ConsoleMessage) -> None:
            console.append(f"{name} [{message.type}] {message.text}")

        def record_error(error: Exception) -> None:
            console.append(f"{name} [pageerror] {error}")
            uncaught.append(f"{name}: {error}")

        page.on("console", record)
        page.on("pageerror", record_error)
        pages[name] = page
        return page

    yield open_page
    for context in contexts:
        context.close()
    if uncaught:
        pytest.fail("uncaught errors in the page:\n" + "\n".join(uncaught))


@pytest.fixture
def page(new_page: PageOpener, locale: str) -> Page:
    """The customer chat's page size, in ``locale``."""
    return new_page("page", locale=locale)
