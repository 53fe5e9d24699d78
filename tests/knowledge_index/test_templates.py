"""Response templates: placeholders, a broken template, filling without formatting."""

from __future__ import annotations

import pytest

from knowledge_index.templates import fill, placeholders, without_placeholders


def test_placeholders_in_order_each_once():
    assert placeholders("订单 {order_number}：{status}（{order_number}）") == ["order_number", "status"]
    assert placeholders("Refunds arrive in 1-3 days.") == []
    assert placeholders("Use {{code}} at checkout") == []  # doubled braces are literal text


@pytest.mark.parametrize(
    "template",
    ["Your order {order_number is on its way", "{status} and {oops", "Order: {status}}", "oops }"],
)
def test_a_broken_template_has_no_placeholders_to_fill(template):
    # None, not []: an empty list would read as "ready to send" and leak "{order_number" to a customer.
    assert placeholders(template) is None


def test_fill_inserts_values_as_they_are():
    assert fill("Order {order_number}: {status}", {"order_number": "LM1", "status": "{x} shipped"}) == (
        "Order LM1: {x} shipped"
    )
    assert fill("Use {{code}} for {who}", {"who": "you"}) == "Use {code} for you"
    assert fill("Hi {name}!", {}) == "Hi !"


def test_fill_leaves_a_broken_template_unchanged():
    assert fill("Order {order_number", {"order_number": "LM1"}) == "Order {order_number"


def test_without_placeholders_keeps_the_words():
    assert without_placeholders("订单 {order_number}：{status}") == "订单  ： "
