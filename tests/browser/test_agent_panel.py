"""The agent desk (/agent) in real Chromium against the real service, with a customer on the web chat.

Two services: ``baton_service`` routes chats to agents (the default, ``assign``), and
``broadcast_service`` (same knowledge base and model, its own Redis database) leaves them in the
queue until an agent accepts one. Each test starts and ends with every demo agent offline and
no chat waiting or in progress, so tests do not depend on their order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.api.conftest import Agent, clear_desk
from tests.browser.chat_page import open_chat, replies, send, texts
from tests.browser.conftest import PageOpener
from tests.conftest import TINY_KB, ServiceProcess

DESK = (1400, 900)  # an agent's screen
ATTACKS = ("<script>window.__pwned = 1</script>", '<img src=x onerror="window.__pwned = 2">')

# Installed before the desk's own script: the wall-clock moment the first queue entry appears.
QUEUE_WATCH = """
new MutationObserver(() => {
  if (window.__queueSeenAt === undefined && document.querySelector('#queue .item')) window.__queueSeenAt = Date.now();
}).observe(document, {subtree: true, childList: true});
"""
# ... and on the customer's page, the moment it says the chat went to the queue.
QUEUED_WATCH = """
new MutationObserver(() => {
  if (window.__queuedAt === undefined && document.querySelector('#transcript .note')) window.__queuedAt = Date.now();
}).observe(document, {subtree: true, childList: true});
"""


@pytest.fixture(scope="module")
def broadcast_service(
    baton_service: ServiceProcess, redis_server: Any, tmp_path_factory: Any
) -> Iterator[ServiceProcess]:
    """`baton serve` with BATON_ROUTING=broadcast, reusing baton_service's trained model."""
    service = ServiceProcess(
        TINY_KB,
        tmp_path_factory.mktemp("broadcast"),
        redis_server.url.rsplit("/", 1)[0] + "/2",
        model_dir=baton_service.model_dir,
        env={"BATON_ROUTING": "broadcast"},
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def desk(baton_service: ServiceProcess) -> Iterator[ServiceProcess]:
    """The routing service with an empty desk, emptied again afterwards."""
    clear_desk(baton_service)
    yield baton_service
    clear_desk(baton_service)


@pytest.fixture
def broadcast_desk(broadcast_service: ServiceProcess) -> Iterator[ServiceProcess]:
    """The broadcast service with an empty desk, emptied again afterwards."""
    clear_desk(broadcast_service)
    yield broadcast_service
    clear_desk(broadcast_service)


def sign_in(page: Page, service: ServiceProcess, agent_id: str, *, online: bool = True) -> None:
    """Sign in through the form (and go online) as a demo agent."""
    page.goto(f"{service.url}/agent")
    expect(page.locator("body")).to_have_attribute("data-view", "signin")
    page.locator("input[name=agent_id]").fill(agent_id)
    page.locator("input[name=password]").fill(f"{agent_id}-demo")
    page.locator("#signin-form button[type=submit]").click()
    expect(page.locator("body")).to_have_attribute("data-view", "desk")
    expect(page.locator("body")).to_have_attribute("data-connection", "open")
    if online:
        page.locator("#online").check()
        expect(page.locator("#online-label")).to_have_text("Online")


def escalate(customer: Page, service: ServiceProcess, *before: str) -> None:
    """The customer says ``before``, then asks for a person; waits until the chat page says so."""
    open_chat(customer, service)
    for text in before:
        count = replies(customer).count()
        send(customer, text)
        expect(replies(customer)).not_to_have_count(count)
    send(customer, "I want to talk to a person")
    expect(customer.locator("#transcript .note").first).to_be_visible()


def transcript(page: Page, sender: str) -> Locator:
    return page.locator(f'#transcript .turn[data-sender="{sender}"] .turn__text')


def conversation_id(page: Page) -> str:
    """The id of the chat open on the desk (from its address)."""
    return page.evaluate("decodeURIComponent(location.hash.replace('#/c/', ''))")


def test_escalation_reaches_the_desk_and_the_agent_accepts_replies_with_an_edited_suggestion_and_resolves(
    new_page: PageOpener, broadcast_desk: ServiceProcess
) -> None:
    service = broadcast_desk
    agent = new_page("agent", viewport=DESK)
    agent.add_init_script(QUEUE_WATCH)
    sign_in(agent, service, "alice")
    customer = new_page("customer")
    customer.add_init_script(QUEUED_WATCH)

    escalate(customer, service, "how much is shipping?")

    entry = agent.locator("#queue .item")
    expect(entry).to_have_count(1)
    # The bound: the desk shows the handoff within 1 s of the customer being queued.
    expect(agent.locator("#queue-unread")).to_have_text("1")
    seen_at, queued_at = agent.evaluate("window.__queueSeenAt"), customer.evaluate("window.__queuedAt")
    assert seen_at - queued_at <= 1000, (
        f"the desk showed the handoff {seen_at - queued_at} ms after the queue"
    )
    expect(entry.locator(".badge--reason").first).to_have_text("Asked for a person")
    expect(entry.locator(".item__meta")).to_have_text("Web · EN · general")
    expect(entry.locator(".item__summary")).to_contain_text("shipping")  # what the chat is about
    expect(entry.locator(".item__wait")).to_have_text(re.compile(r"^0:\d\d$"))  # the wait, m:ss
    expect(agent).to_have_title("(1) Agent desk · Baton")

    entry.locator(".item__accept").click()
    expect(agent.locator("#queue .item")).to_have_count(0)
    expect(agent.locator("#chats .item")).to_have_count(1)
    expect(agent.locator("#chat-view")).to_have_attribute("data-mode", "mine")
    expect(transcript(agent, "customer")).to_have_text(
        ["how much is shipping?", "I want to talk to a person"]
    )
    expect(agent.locator("#chat-reasons .badge--reason").first).to_have_text("Asked for a person")
    expect(agent.locator("#chat-summary")).not_to_be_empty()
    expect(agent.locator("#customer")).to_contain_text("standard")
    expect(agent.locator("#identities")).to_contain_text("Web")
    expect(customer.locator("#transcript")).to_contain_text("joined")

    suggestion = agent.locator(".suggestion").first
    expect(suggestion).to_be_visible()
    picked = suggestion.locator(".suggestion__text").inner_text()
    suggestion.click()
    reply = agent.locator("#reply")
    expect(reply).to_have_value(picked)
    expect(reply).to_be_focused()
    reply.press("End")
    reply.press("Shift+Enter")  # a new line, not a send
    reply.type("Alice here.")
    expect(reply).to_have_value(f"{picked}\nAlice here.")
    reply.press("Enter")
    expect(reply).to_have_value("")
    expect(transcript(agent, "agent")).to_have_text([f"{picked}\nAlice here."])
    expect(agent.locator('#transcript .turn[data-sender="agent"] .turn__who')).to_contain_text("Alice")
    expect(texts(customer, "agent")).to_have_text([f"{picked}\nAlice here."])

    # The customer answers: the desk shows it in the transcript.
    send(customer, "thanks, that helps")
    expect(transcript(agent, "customer")).to_have_count(3)

    agent.locator("#resolve").click()
    expect(agent.locator("#chats .item")).to_have_count(0)
    expect(agent.locator("#chat-view")).to_have_attribute("data-mode", "readonly")
    expect(agent.locator("#chat-state")).to_have_text("Resolved")
    stars = customer.locator(".quick-reply", has_text="★★★★★")
    expect(stars).to_be_visible()
    expect(replies(customer).last).to_contain_text("rate")


def test_a_routed_chat_opens_by_itself_and_marks_and_suggestions_follow_each_customer_message(
    new_page: PageOpener, desk: ServiceProcess
) -> None:
    agent = new_page("agent", viewport=DESK)
    sign_in(agent, desk, "alice")
    alerts = agent.locator("#alerts")
    alerts.click()  # tone and desktop notification on; the choice is kept
    expect(alerts).to_have_attribute("aria-pressed", "true")
    assert agent.evaluate("localStorage.getItem('baton.agent.alerts')") == "on"
    customer = new_page("customer")

    escalate(customer, desk)

    expect(agent.locator("#chats .item")).to_have_count(1)
    expect(agent.locator("#chat-view")).to_have_attribute("data-mode", "mine")
    expect(agent.locator("#queue .item")).to_have_count(0)
    before = agent.locator(".suggestion__text").all_inner_texts()

    send(customer, "how long does a refund take? this is useless, I am furious!!")
    angry = agent.locator('#transcript .turn[data-sender="customer"]').last
    expect(angry.locator(".turn__text")).to_have_text(
        "how long does a refund take? this is useless, I am furious!!"
    )
    expect(angry.locator(".mood")).to_have_attribute("data-mood", "angry")
    expect(agent.locator(".suggestion__text")).not_to_have_text(before)  # fresh for the new message

    agent.locator("#handback").click()
    expect(agent.locator("#chats .item")).to_have_count(0)
    expect(agent.locator("#chat-state")).to_have_text("With the bot")
    count = replies(customer).count()
    send(customer, "how much is shipping?")
    expect(texts(customer, "bot").last).not_to_have_text("")
    expect(replies(customer)).not_to_have_count(count)

    # With no chat of her own open, the next routed chat opens by itself too.
    first = conversation_id(agent)
    escalate(new_page("second customer"), desk)
    expect(agent.locator("#chat-view")).to_have_attribute("data-mode", "mine")
    assert conversation_id(agent) != first


def test_customer_text_and_notes_are_shown_as_text_never_run(
    new_page: PageOpener, desk: ServiceProcess
) -> None:
    agent = new_page("agent", viewport=DESK)
    sign_in(agent, desk, "alice")
    customer = new_page("customer")

    escalate(customer, desk, *ATTACKS)

    expect(transcript(agent, "customer")).to_have_text([*ATTACKS, "I want to talk to a person"])
    agent.locator("#note").fill('<b id="bold">note</b><img src=x onerror="window.__pwned = 3">')
    agent.locator("#note-form button").click()
    expect(agent.locator("#notes li").first).to_contain_text('<b id="bold">note</b>')
    agent.locator("#reply").fill("<i>hello</i>")
    agent.locator("#reply").press("Enter")
    expect(texts(customer, "agent")).to_have_text(["<i>hello</i>"])

    assert agent.evaluate("window.__pwned") is None
    assert customer.evaluate("window.__pwned") is None
    assert agent.locator("#transcript img, #transcript script, #notes img, #bold").count() == 0
    assert agent.locator(".item__summary, #chat-summary").evaluate_all(
        "nodes => nodes.every(n => n.children.length === 0)"
    )


def test_another_agent_cannot_open_the_chat_by_url_or_by_api(
    new_page: PageOpener, desk: ServiceProcess
) -> None:
    alice = new_page("agent", viewport=DESK)
    sign_in(alice, desk, "alice")
    customer = new_page("customer")
    escalate(customer, desk, "my secret order details")
    expect(alice.locator("#chat-view")).to_have_attribute("data-mode", "mine")
    taken = conversation_id(alice)

    bob = new_page("bob", viewport=DESK)
    sign_in(bob, desk, "bob", online=False)
    bob.goto(f"{desk.url}/agent#/c/{taken}")
    denied = bob.locator("#chat-denied")
    expect(denied).to_be_visible()
    expect(denied).to_contain_text("not yours")
    expect(bob.locator("#chat-view")).to_be_hidden()
    expect(bob.locator("body")).not_to_contain_text("my secret order details")
    expect(bob.locator("#chats .item, #queue .item")).to_have_count(0)

    token = bob.evaluate("sessionStorage.getItem('baton.agent.token')")
    api = f"{desk.url}/api/v1/agent/conversations/{taken}"
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(api, headers=headers).status_code == 403
    assert httpx.post(f"{api}/messages", headers=headers, json={"text": "hi"}).status_code == 403


def test_knowledge_search_notes_and_transfer(new_page: PageOpener, desk: ServiceProcess) -> None:
    agent = new_page("agent", viewport=DESK)
    sign_in(agent, desk, "alice")
    customer = new_page("customer")
    escalate(customer, desk)
    expect(agent.locator("#chat-view")).to_have_attribute("data-mode", "mine")
    bob = Agent(desk, "bob")
    bob.online()  # only now, so the chat went to alice

    agent.locator("#reply").focus()
    agent.keyboard.press("Control+k")
    search = agent.locator("#search-input")
    expect(search).to_be_focused()
    search.fill("refund")
    result = agent.locator("#search-results .result").first
    expect(result).to_contain_text("refund", ignore_case=True)
    found = result.locator(".result__text").inner_text()
    result.click()
    expect(agent.locator("#search-dialog")).not_to_be_visible()
    expect(agent.locator("#reply")).to_have_value(found)

    agent.locator("#note").fill("Customer prefers email.")
    agent.locator("#note-form button").click()
    expect(agent.locator("#notes li")).to_have_count(1)
    expect(agent.locator("#notes li")).to_contain_text("Customer prefers email.")
    expect(customer.locator("#transcript")).not_to_contain_text("prefers email")

    agent.locator("#transfer").click()
    agent.locator("#transfer-agent").select_option("bob")
    agent.locator("#transfer-form button[type=submit]").click()
    expect(agent.locator("#chats .item")).to_have_count(0)
    expect(agent.locator("#chat-view")).to_have_attribute("data-mode", "readonly")
    chats = bob.call("GET", "/chats").json()["chats"]
    assert [c["conversation_id"] for c in chats] == [conversation_id(agent)]


@pytest.mark.parametrize("locale", ["zh-CN"])
def test_the_desk_follows_the_browser_language_and_the_toggle(
    new_page: PageOpener, locale: str, desk: ServiceProcess
) -> None:
    agent = new_page("agent", viewport=DESK, locale=locale)
    agent.goto(f"{desk.url}/agent")
    expect(agent.locator("#signin-form h1")).to_have_text("登录客服工作台")
    expect(agent.locator("html")).to_have_attribute("lang", "zh-CN")
    agent.locator("input[name=agent_id]").fill("alice")
    agent.locator("input[name=password]").fill("wrong")
    agent.locator("#signin-form button[type=submit]").click()
    expect(agent.locator("#signin-form [data-role=error]")).to_have_text("账号不存在或密码错误。")

    agent.locator('.lang-toggle [data-lang="en"]').click()
    expect(agent.locator("#signin-form h1")).to_have_text("Sign in to the agent desk")
    agent.reload()
    expect(agent.locator("#signin-form h1")).to_have_text("Sign in to the agent desk")  # the choice is kept

    sign_in(agent, desk, "alice", online=False)
    agent.locator("#sign-out").click()
    expect(agent.locator("body")).to_have_attribute("data-view", "signin")
    assert agent.evaluate("sessionStorage.getItem('baton.agent.token')") is None
