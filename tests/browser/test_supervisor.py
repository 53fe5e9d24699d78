"""The supervisor view (/agent/supervisor) in real Chromium against the real service.

The service is shared by the session's tests, which leave conversations and counters behind, so
the page's figures are compared with ``/api/v1/stats`` as the test reads it, never with fixed
numbers. Each test puts the agents it needs online and offline again afterwards.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.api.conftest import DEMO, Agent, WebVisitor, visitor_wait
from tests.browser.conftest import PageOpener

NONE = "—"
TILES = ("tile-agents-online", "tile-queue", "tile-longest-wait", "tile-breaches", "tile-automation")
# The English labels of the reason codes (agent_assist/static/js/strings.js).
REASONS_EN = {
    "explicit_request": "Asked for a person",
    "negative_sentiment": "Upset",
    "sensitive_topic": "Sensitive",
    "repeated_question": "Repeated question",
    "fallback_streak": "Not understood",
    "too_many_turns": "Long conversation",
}
STATUS_ZH = {"below": "低于目标", "within": "达到目标", "above": "高于目标", "none": "暂无会话"}
STATUS_EN = {
    "below": "Below target",
    "within": "Within target",
    "above": "Above target",
    "none": "No conversations yet",
}


@pytest.fixture
def page(new_page: PageOpener, locale: str) -> Page:
    """A supervisor's screen: a desktop window, in ``locale``."""
    return new_page("supervisor", locale=locale, viewport=(1280, 900))


def sign_in(page: Page, service: Any, agent_id: str) -> None:
    """Open the page and sign in through its form (by field name: the labels follow the language)."""
    page.goto(f"{service.url}/agent/supervisor")
    form = page.locator("#signin-form")
    expect(form).to_be_visible()
    form.locator('input[name="agent_id"]').fill(agent_id)
    form.locator('input[name="password"]').fill(f"{agent_id}-demo")
    form.locator('button[type="submit"]').click()


def sign_in_as_supervisor(page: Page, service: Any) -> None:
    """Sign in as sam and wait for the first figures (the agents table fills with them)."""
    sign_in(page, service, "sam")
    expect(page.locator("#agents tr")).to_have_count(len(DEMO))


def today(service: Any) -> dict[str, Any]:
    answer = httpx.get(f"{service.url}/api/v1/stats", params={"day": "today"})
    answer.raise_for_status()
    return answer.json()


def value(page: Page, tile: str) -> Locator:
    return page.locator(f"#{tile} .tile__value")


def automation_status(figures: dict[str, Any]) -> str:
    rate, target = figures["automation_rate"], figures["automation_target"]
    if rate is None:
        return "none"
    if rate < target["low"]:
        return "below"
    return "above" if rate > target["high"] else "within"


def assert_reasons_match(page: Page, figures: dict[str, Any]) -> None:
    """Handoffs by reason: the stats' counts, largest first (ties by code), or the empty state."""
    counts = {reason: n for reason, n in figures["handoffs_by_reason"].items() if n}
    order = sorted(counts, key=lambda reason: (-counts[reason], reason))
    expect(page.locator("#reasons .reason__count")).to_have_text([str(counts[r]) for r in order])
    expect(page.locator("#reasons .reason__label")).to_have_text([REASONS_EN.get(r, r) for r in order])
    if order:
        expect(page.locator("#reasons-empty")).to_be_hidden()
    else:
        expect(page.locator("#reasons-empty")).to_have_text("No handoffs today.")


def test_supervisor_sees_the_figures_the_stats_report(page: Page, baton_service: Any) -> None:
    bob = Agent(baton_service, "bob")
    bob.online()
    try:
        sign_in_as_supervisor(page, baton_service)
        figures = today(baton_service)
        live = figures["live"]
        assert live["agents_online"] >= 1

        expect(page.locator("#me")).to_have_text("Sam")
        expect(value(page, "tile-agents-online")).to_have_text(str(live["agents_online"]))
        expect(page.locator("#tile-agents-online .tile__note")).to_have_text(f"of {len(DEMO)} agents")
        expect(value(page, "tile-queue")).to_have_text(str(live["queue_length"]))
        expect(value(page, "tile-in-progress")).to_have_text(str(live["chats_in_progress"]))
        expect(value(page, "tile-breaches")).to_have_text(str(figures["first_response_breaches"]))
        expect(value(page, "tile-conversations")).to_have_text(str(figures["conversations"]))
        expect(value(page, "tile-handoffs")).to_have_text(str(figures["handoffs"]))
        if live["queue_length"] == 0:
            expect(value(page, "tile-longest-wait")).to_have_text(NONE)

        # Every demo agent, the ones online first; bob online with his load out of his maximum.
        rows = page.locator("#agents tr")
        assert sorted(rows.evaluate_all("rows => rows.map(r => r.dataset.agentId)")) == sorted(DEMO)
        online = rows.evaluate_all("rows => rows.map(r => r.dataset.online === 'true')")
        assert online == sorted(online, reverse=True), online
        me = bob.call("GET", "/me").json()
        bob_row = page.locator('#agents tr[data-agent-id="bob"]')
        expect(bob_row).to_have_attribute("data-online", "true")
        expect(bob_row.locator(".presence")).to_have_text("Online")
        expect(bob_row.locator(".load__text")).to_have_text(f"{me['load']} / {me['max_chats']}")
        expect(page.locator('#agents tr[data-agent-id="chen"] .agent__name')).to_have_text("陈晨")
        expect(page.locator('#agents tr[data-agent-id="sam"] .badge--role')).to_have_text("Supervisor")

        status = automation_status(figures)
        expect(page.locator("#automation-status")).to_have_attribute("data-status", status)
        expect(page.locator("#automation-status")).to_have_text(STATUS_EN[status])
        expect(page.locator("#automation-target")).to_have_text("Target 60–70%")
        shown = page.locator("#automation-rate").inner_text()
        if figures["automation_rate"] is None:
            assert shown == NONE
        else:
            assert abs(float(shown.rstrip("%")) - figures["automation_rate"] * 100) <= 0.051, shown

        assert_reasons_match(page, figures)
    finally:
        bob.online(False)
        bob.close()


def test_a_waiting_customer_shows_in_the_queue_tiles_and_reasons(page: Page, baton_service: Any) -> None:
    assert today(baton_service)["live"]["agents_online"] == 0, "an earlier test left agents online"
    sign_in_as_supervisor(page, baton_service)
    sam = Agent(baton_service, "sam")
    customer = WebVisitor(baton_service)
    customer.connect()
    conversation_id = None
    try:
        # Nobody is online: the customer is invited to leave a message, which waits in the queue.
        customer.send_raw(json.dumps({"type": "message", "text": "转人工", "client_message_id": "sv-1"}))
        queued = visitor_wait(customer, lambda f: f["type"] == "state" and f["state"] == "queued")[-1]
        conversation_id = queued["conversation_id"]

        waiting = sam.call("GET", "/queue").json()["waiting"]
        handoff = next(h for h in waiting if h["conversation_id"] == conversation_id)
        assert handoff["reasons"][0] == "explicit_request"

        row = page.locator(f'#queue tr[data-conversation-id="{conversation_id}"]')
        expect(row).to_be_visible()
        expect(row.locator(".badge--reason")).to_have_text([REASONS_EN[r] for r in handoff["reasons"]])
        expect(row.locator(".badge--ticket")).to_have_count(1 if handoff["ticket"] else 0)
        expect(row.locator("td").nth(2)).to_have_text("Web")
        expect(row.locator("td").nth(3)).to_have_text("Chinese")
        expect(row.locator(".wait")).to_have_text(re.compile(r"^\d+:\d\d$"))

        figures = today(baton_service)
        live = figures["live"]
        assert live["queue_length"] >= 1
        expect(value(page, "tile-queue")).to_have_text(str(live["queue_length"]))
        expect(page.locator("#queue-count")).to_have_text(str(live["queue_length"]))
        if live["tickets_waiting"]:
            expect(page.locator("#tile-queue .tile__note")).to_have_text(
                f"{live['tickets_waiting']} left a message"
            )
        assert_reasons_match(page, figures)

        longest = value(page, "tile-longest-wait")
        expect(longest).to_have_text(re.compile(r"^\d+:\d\d$"))
        expect(longest).not_to_have_text(longest.inner_text())  # it ticks between fetches

        # Closed by the supervisor over the API: the row leaves the page without a reload.
        assert sam.call("POST", f"/conversations/{conversation_id}/close").status_code == 200
        conversation_id = None
        expect(row).to_have_count(0)
    finally:
        if conversation_id:  # leave the queue empty for later tests
            sam.call("POST", f"/conversations/{conversation_id}/close")
        customer.close()
        sam.close()


def test_an_agent_who_is_not_a_supervisor_sees_a_notice_and_no_figures(
    page: Page, baton_service: Any
) -> None:
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    sign_in(page, baton_service, "alice")

    notice = page.locator("#supervisor-only")
    expect(notice).to_be_visible()
    expect(notice.get_by_role("heading")).to_have_text("This view is for supervisors")
    expect(notice).to_contain_text("Alice")
    expect(notice.get_by_role("link", name="Go to the agent desk")).to_have_attribute("href", "/agent")
    for tile in TILES:
        expect(page.locator(f"#{tile}")).to_be_hidden()
    expect(page.locator("#agents tr")).to_have_count(0)
    assert not [url for url in fetched if "/api/v1/stats" in url or url.endswith("/agent/agents")], fetched

    notice.get_by_role("button", name="Sign in as someone else").click()
    expect(page.locator("#signin-form")).to_be_visible()
    expect(notice).to_be_hidden()


@pytest.mark.parametrize("locale", ["zh-CN"])
def test_chinese_follows_the_browser_and_the_toggle_switches_to_english(
    page: Page, baton_service: Any
) -> None:
    page.goto(f"{baton_service.url}/agent/supervisor")
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#signin-form h1")).to_have_text("登录主管看板")
    sign_in_as_supervisor(page, baton_service)
    figures = today(baton_service)
    status = automation_status(figures)

    expect(page).to_have_title("主管看板 · Baton")
    expect(page.locator("#tile-queue .tile__label")).to_have_text("排队中")
    expect(page.locator("#tile-agents-online .tile__note")).to_have_text(f"共 {len(DEMO)} 名客服")
    expect(page.locator("#automation-status")).to_have_text(STATUS_ZH[status])
    expect(page.locator('#agents tr[data-agent-id="sam"] .presence')).to_have_text(
        re.compile("^(在线|离线)$")
    )
    expect(page.locator("#agent-desk-link")).to_have_text("客服工作台")

    page.get_by_role("button", name="EN").click()

    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page).to_have_title("Supervisor · Baton")
    expect(page.locator("#tile-queue .tile__label")).to_have_text("Waiting")
    expect(page.locator("#tile-agents-online .tile__note")).to_have_text(f"of {len(DEMO)} agents")
    expect(page.locator("#automation-status")).to_have_text(STATUS_EN[status])
    expect(page.locator('#agents tr[data-agent-id="sam"] .presence')).to_have_text(
        re.compile("^(Online|Offline)$")
    )
    expect(page.get_by_role("button", name="EN")).to_have_attribute("aria-pressed", "true")


def test_an_agent_going_online_shows_without_a_reload(page: Page, baton_service: Any) -> None:
    bob = Agent(baton_service, "bob")
    try:
        bob.online(False)
        sign_in_as_supervisor(page, baton_service)
        expect(page.locator("body")).to_have_attribute("data-connection", "open")
        bob_row = page.locator('#agents tr[data-agent-id="bob"]')
        expect(bob_row).to_have_attribute("data-online", "false")
        online = today(baton_service)["live"]["agents_online"]
        expect(value(page, "tile-agents-online")).to_have_text(str(online))

        bob.online()
        expect(bob_row).to_have_attribute("data-online", "true")
        expect(value(page, "tile-agents-online")).to_have_text(str(online + 1))
        expect(page.locator("#agents tr").first).to_have_attribute("data-online", "true")

        bob.online(False)
        expect(bob_row).to_have_attribute("data-online", "false")
        expect(value(page, "tile-agents-online")).to_have_text(str(online))
    finally:
        bob.online(False)
        bob.close()


def test_a_session_ended_elsewhere_returns_to_the_sign_in_form(page: Page, baton_service: Any) -> None:
    sign_in_as_supervisor(page, baton_service)
    token = page.evaluate("sessionStorage.getItem('baton.agent.token')")
    signed_out = httpx.delete(
        f"{baton_service.url}/api/v1/agent/session", headers={"Authorization": f"Bearer {token}"}
    )
    signed_out.raise_for_status()

    # The next refresh is refused (401): the form comes back with a notice, the figures go.
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator('#signin-form [data-role="error"]')).to_have_text(
        "Your session has ended. Please sign in again."
    )
    expect(page.locator("#board")).to_be_hidden()
    expect(page.locator("#agents tr")).to_have_count(0)
    assert page.evaluate("sessionStorage.getItem('baton.agent.token')") is None
