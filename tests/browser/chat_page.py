"""Driving the customer's web chat page (api/static/web) in browser tests."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Locator, Page, expect


def open_chat(page: Page, service: Any) -> None:
    """Open the chat page as a new visitor and wait until its WebSocket is open."""
    page.goto(f"{service.url}/")
    expect(page.locator("body")).to_have_attribute("data-status", "open")


def send(page: Page, text: str) -> None:
    """Type ``text`` and press Enter, as a customer does."""
    page.locator("#input").fill(text)
    page.locator("#input").press("Enter")


def texts(page: Page, sender: str) -> Locator:
    """The texts of the messages from ``sender`` (customer, bot, agent, system)."""
    return page.locator(f'#transcript .message[data-sender="{sender}"] .message__text')


def replies(page: Page) -> Locator:
    """Every message not from the customer: the bot's, an agent's, the system's."""
    return page.locator('#transcript .message:not([data-sender="customer"]) .message__text')
