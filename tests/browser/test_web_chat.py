"""The customer web chat (api/static/web) in real Chromium against the real service.

``baton_service`` (tests/conftest.py) runs ``baton serve`` trained on tests/fixtures/tiny_kb; the
expected answers are read from that knowledge base's domain.yml rather than copied here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Page, expect

from tests.browser.chat_page import open_chat, replies, send, texts

TINY_KB = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_kb"
DOMAIN = yaml.safe_load((TINY_KB / "domain.yml").read_text(encoding="utf-8"))
MAX_CHARS = 4000

# Installed before the page's own script: records what appeared, in order, however briefly
# (a typing indicator can be shown and hidden again within a few milliseconds).
RECORDER = """
window.__events = [];
new MutationObserver((records) => {
  for (const r of records) {
    const el = r.target;
    if (r.type === 'attributes' && r.attributeName === 'data-status' && el === document.body) {
      window.__events.push('status:' + el.dataset.status);
    } else if (r.type === 'attributes' && r.attributeName === 'hidden' && (el.id === 'typing' || el.id === 'banner')) {
      window.__events.push(el.id + ':' + (el.hidden ? 'hidden' : 'shown:' + el.textContent.trim()));
    } else if (r.type === 'childList') {
      for (const node of r.addedNodes) {
        if (node.nodeType === 1 && node.matches('.message')) window.__events.push('message:' + node.dataset.sender);
      }
    }
  }
}).observe(document, {subtree: true, childList: true, attributes: true, attributeFilter: ['hidden', 'data-status']});
"""


def kb_response(name: str, language: str) -> str:
    """A tiny_kb response's text in ``language`` (English is the variation without a condition)."""
    for variation in DOMAIN["responses"][name]:
        languages = {c.get("value") for c in variation.get("condition") or []}
        if language in languages or (not languages and language == "en"):
            return variation["text"]
    raise KeyError(f"{name} has no {language} variation")


def conversation_ids(page: Page) -> list[str | None]:
    return page.locator("#transcript section.conversation").evaluate_all(
        "sections => sections.map(s => s.dataset.conversationId ?? null)"
    )


def events(page: Page) -> list[str]:
    return page.evaluate("window.__events")


def test_english_chrome_and_answer(page: Page, baton_service: Any) -> None:
    open_chat(page, baton_service)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page).to_have_title("Customer support")
    expect(page.locator("#send")).to_have_text("Send")
    expect(page.get_by_label("Your message")).to_have_attribute("placeholder", "Type your message…")
    expect(page.locator("#welcome")).to_be_visible()

    send(page, "how much is shipping?")

    expect(texts(page, "customer")).to_have_text(["how much is shipping?"])
    expect(texts(page, "bot")).to_have_text([kb_response("utter_faq/shipping_cost", "en")])
    expect(page.locator('.message[data-sender="bot"] .message__sender')).to_have_text(["Bot"])
    expect(page.locator('.message[data-sender="customer"]')).to_have_attribute("data-state", "delivered")
    expect(page.locator("#welcome")).to_be_hidden()
    expect(page.locator("#input")).to_be_focused()


@pytest.mark.parametrize("locale", ["zh-CN"])
def test_chinese_chrome_and_answer(page: Page, baton_service: Any) -> None:
    open_chat(page, baton_service)
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page).to_have_title("在线客服")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.get_by_label("输入消息")).to_have_attribute("placeholder", "请输入您的问题…")

    send(page, "退款多久到账")

    expect(texts(page, "bot")).to_have_text([kb_response("utter_faq/refund_time", "zh")])
    expect(page.locator('.message[data-sender="bot"] .message__sender')).to_have_text(["智能客服"])


def test_shift_enter_starts_a_new_line_that_the_transcript_keeps(page: Page, baton_service: Any) -> None:
    open_chat(page, baton_service)
    composer = page.locator("#input")
    composer.press_sequentially("line one")
    composer.press("Shift+Enter")
    composer.press_sequentially("line two")
    expect(composer).to_have_value("line one\nline two")
    expect(page.locator("#transcript .message")).to_have_count(0)

    composer.press("Enter")

    sent = texts(page, "customer")
    expect(sent).to_have_count(1)
    assert sent.inner_text() == "line one\nline two"
    expect(composer).to_have_value("")


def test_language_toggle_is_remembered(page: Page, baton_service: Any) -> None:
    open_chat(page, baton_service)
    page.get_by_role("button", name="中文").click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#send")).to_have_text("发送")
    expect(page.get_by_role("button", name="中文")).to_have_attribute("aria-pressed", "true")

    page.reload()

    expect(page.locator("#send")).to_have_text("发送")
    page.get_by_role("button", name="English").click()
    expect(page.locator("#send")).to_have_text("Send")


def test_quick_reply_shows_its_title_and_gets_an_answer(page: Page, baton_service: Any) -> None:
    open_chat(page, baton_service)
    person = page.locator(".quick-reply", has_text="Talk to a person")
    send(page, "tell me a joke")  # out of scope: a fallback with a "talk to a person" button
    expect(person).to_have_count(1)
    expect(person).to_be_enabled()
    send(page, "how much is shipping?")
    expect(texts(page, "bot")).to_have_count(2)
    expect(person).to_be_disabled()  # a newer turn arrived: the old question has moved on

    send(page, "write me a poem")
    expect(person).to_have_count(2)
    expect(person.last).to_be_enabled()
    answered = replies(page).count()
    person.last.click()

    said = ["tell me a joke", "how much is shipping?", "write me a poem", "Talk to a person"]
    expect(texts(page, "customer")).to_have_text(said)
    expect(page.locator("#transcript")).not_to_contain_text("/human_handoff")
    # The bot's confirmation, then where the customer stands (nobody is online: leave a message).
    expect(replies(page)).to_have_count(answered + 2)
    expect(replies(page).last).to_contain_text("Leave a message")
    expect(page.locator("#transcript .note")).to_have_text(["Connecting you to a person…"])
    expect(person.last).to_be_disabled()
    expect(page.locator("#input")).to_be_focused()

    # The history the server replays after a reload also shows the title, not the payload.
    page.reload()
    expect(texts(page, "customer")).to_have_text(said)
    expect(person).to_have_count(2)
    for button in person.all():
        expect(button).to_be_disabled()


def test_typing_indicator_shows_before_the_answer(page: Page, baton_service: Any) -> None:
    page.add_init_script(RECORDER)
    open_chat(page, baton_service)

    send(page, "how much is shipping?")

    expect(texts(page, "bot")).to_have_count(1)
    expect(page.locator("#typing")).to_be_hidden()
    seen = events(page)
    assert "typing:shown:Typing…" in seen, seen
    assert seen.index("typing:shown:Typing…") < seen.index("message:bot"), seen


def test_message_text_is_shown_literally_never_run(page: Page, baton_service: Any) -> None:
    attacks = ["<script>window.__xss=1</script>", '<img src=x onerror="window.__xss=1">']
    open_chat(page, baton_service)
    for text in attacks:
        send(page, text)
        expect(page.locator('.message[data-sender="customer"][data-state="delivered"]')).to_have_count(
            attacks.index(text) + 1
        )
    # Two messages the bot cannot understand: a fallback, then a handoff and the queue notice.
    expect(replies(page)).to_have_count(3)

    def assert_inert() -> None:
        expect(texts(page, "customer")).to_have_text(attacks)
        expect(page.locator("#transcript img, #transcript script")).to_have_count(0)
        assert page.evaluate("window.__xss") is None

    assert_inert()
    page.reload()  # now the server's copies are rendered, not the page's own
    expect(replies(page)).to_have_count(3)
    assert_inert()


def test_reconnects_and_resumes_after_a_server_restart(page: Page, baton_service: Any) -> None:
    page.add_init_script(RECORDER)
    open_chat(page, baton_service)
    send(page, "how much is shipping?")
    expect(texts(page, "bot")).to_have_text([kb_response("utter_faq/shipping_cost", "en")])
    [conversation] = conversation_ids(page)
    assert conversation

    restart = threading.Thread(target=baton_service.restart)
    restart.start()
    try:
        expect(page.locator("body")).not_to_have_attribute("data-status", "open")
        expect(page.locator("#banner")).to_have_text("Connection lost. Reconnecting…")
        # Typed while the server is down: queued in the page and sent after the reconnect.
        send(page, "how long does a refund take")
        queued = page.locator('.message[data-sender="customer"]').last
        expect(queued).to_have_attribute("data-state", "sending")
        assert page.locator("body").get_attribute("data-status") != "open", (
            "reconnected before the test typed"
        )
    finally:
        restart.join(timeout=120)
    assert not restart.is_alive(), "baton_service.restart() did not return"

    expect(page.locator("body")).to_have_attribute("data-status", "open", timeout=30_000)
    expect(page.locator("#banner")).to_be_hidden()
    expect(queued).to_have_attribute("data-state", "delivered")
    expect(texts(page, "bot")).to_have_text(
        [kb_response("utter_faq/shipping_cost", "en"), kb_response("utter_faq/refund_time", "en")]
    )
    expect(texts(page, "customer")).to_have_text(["how much is shipping?", "how long does a refund take"])
    assert conversation_ids(page) == [conversation]
    assert "banner:shown:Connection lost. Reconnecting…" in events(page)

    # The server's copy agrees: a reload shows each turn once.
    page.reload()
    expect(texts(page, "customer")).to_have_text(["how much is shipping?", "how long does a refund take"])
    expect(texts(page, "bot")).to_have_count(2)
    assert conversation_ids(page) == [conversation]


def test_reload_restores_the_transcript(page: Page, baton_service: Any) -> None:
    open_chat(page, baton_service)
    send(page, "hello")
    expect(texts(page, "bot")).to_have_text([kb_response("utter_greet", "en")])
    send(page, "how much is shipping?")
    expect(texts(page, "bot")).to_have_count(2)
    before = {sender: texts(page, sender).all_text_contents() for sender in ("customer", "bot")}
    [conversation] = conversation_ids(page)

    page.reload()

    expect(page.locator("body")).to_have_attribute("data-status", "open")
    expect(texts(page, "customer")).to_have_text(before["customer"])
    expect(texts(page, "bot")).to_have_text(before["bot"])
    assert conversation_ids(page) == [conversation]
    expect(page.locator("#welcome")).to_be_hidden()


def test_message_over_the_limit_is_not_sent(page: Page, baton_service: Any) -> None:
    open_chat(page, baton_service)
    composer = page.locator("#input")
    counter = page.locator("#counter")

    composer.fill("a" * 100)
    expect(counter).to_be_hidden()  # no counter far from the limit
    composer.fill("a" * (MAX_CHARS - 100))
    expect(counter).to_have_text("100 characters left")

    # Typing stops at the limit.
    composer.fill("a" * (MAX_CHARS - 1))
    composer.press_sequentially("bcd")
    assert len(composer.input_value()) == MAX_CHARS
    expect(counter).to_have_text(f"Character limit reached ({MAX_CHARS})")

    # Text that bypassed the limit (set by a script) is flagged and refused.
    composer.evaluate(
        "(el, n) => { el.value = 'b'.repeat(n); el.dispatchEvent(new Event('input')); }", MAX_CHARS + 1
    )
    expect(counter).to_have_text(f"1 over the {MAX_CHARS}-character limit")
    expect(composer).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#send")).to_be_disabled()
    composer.press("Enter")
    expect(page.locator("#alert")).to_have_text(f"This message is too long (at most {MAX_CHARS} characters).")
    expect(page.locator("#transcript .message")).to_have_count(0)

    composer.fill("a" * MAX_CHARS)  # exactly at the limit is accepted
    composer.press("Enter")
    expect(page.locator('.message[data-sender="customer"]')).to_have_attribute("data-state", "delivered")
    expect(composer).to_have_value("")
