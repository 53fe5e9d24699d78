"""Order look-ups: the seed data, and the demo connector on a real Redis."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bot.orders import (
    SEED_FILE,
    STATUSES,
    DemoOrderConnector,
    Order,
    OrderConnector,
    OrderLookupError,
    load_seed_orders,
    normalize_order_number,
)
from conversations.redis_server import free_port
from knowledge_index.model import has_cjk


def run(url: str, body: Callable[[DemoOrderConnector], Awaitable[Any]], **options: Any) -> Any:
    """Run ``body(connector)`` on a fresh event loop with a connector closed afterwards."""

    async def main() -> Any:
        async with DemoOrderConnector.from_url(url, **options) as connector:
            return await body(connector)

    return asyncio.run(main())


def test_the_seed_file_holds_plausible_lumo_orders():
    orders = load_seed_orders()
    numbers = [o.number for o in orders]
    assert 10 <= len(orders) <= 20
    assert len(set(numbers)) == len(numbers)
    assert all(re.fullmatch(r"LM\d{10}", n) for n in numbers)
    assert {o.status for o in orders} == set(STATUSES)  # every status is shown at least once
    for order in orders:
        assert has_cjk(order.status_text["zh"]) and not has_cjk(order.status_text["en"]), order.number
        assert order.updated_at.tzinfo is not None and order.items and order.customer_ref
        assert (order.carrier is None) == (order.status in ("paid", "cancelled")), order.number
    # The file is what the loader reads: nothing in it is dropped.
    assert len(json.loads(SEED_FILE.read_text(encoding="utf-8"))["orders"]) == len(orders)


def test_seeded_orders_are_found_whole_and_unknown_ones_are_not(redis_url):
    seed = load_seed_orders()

    async def body(connector: DemoOrderConnector) -> tuple[int, list[Order | None], Order | None]:
        count = await connector.seed()
        found = [await connector.lookup(o.number) for o in seed]
        return count, found, await connector.lookup("LM2099999999")

    count, found, unknown = run(redis_url, body)
    assert count == len(seed)
    assert found == seed
    assert unknown is None


def test_seeding_is_idempotent_and_restores_the_seed_state(redis_url):
    async def body(connector: DemoOrderConnector) -> tuple[list[str], dict[str, str], dict[str, str]]:
        await connector.seed()
        first = {k: await connector.client.get(k) for k in await connector.client.keys("*")}
        await connector.client.set("baton:demo:order:LM2024051234", json.dumps({"number": "tampered"}))
        await connector.seed()
        keys = sorted(await connector.client.keys("*"))
        second = {k: await connector.client.get(k) for k in keys}
        return keys, first, second

    keys, first, second = run(redis_url, body)
    assert keys == sorted(f"baton:demo:order:{o.number}" for o in load_seed_orders())
    assert second == first


def test_lookup_takes_the_number_as_customers_type_it(redis_url):
    async def body(connector: DemoOrderConnector) -> list[str | None]:
        await connector.seed()
        typed = [
            "lm2024051234",
            "LM 2024 051234",
            "2024051234",
            "LM-2024051234",
            "LM20240512",
            "LM20240512345",
        ]
        return [order.number if (order := await connector.lookup(t)) else None for t in typed]

    assert run(redis_url, body) == ["LM2024051234"] * 4 + [None, None]
    assert normalize_order_number(" 2024051234 ") == "LM2024051234"


def test_a_prefix_keeps_demos_apart(redis_url):
    async def body(connector: DemoOrderConnector) -> tuple[Order | None, Order | None]:
        await connector.seed()
        async with DemoOrderConnector.from_url(redis_url) as default:
            return await connector.lookup("LM2024051234"), await default.lookup("LM2024051234")

    mine, other = run(redis_url, body, prefix="test-a:")
    assert mine is not None and mine.number == "LM2024051234"
    assert other is None


def test_an_unreadable_value_or_an_unreachable_redis_is_a_lookup_error(redis_url):
    async def stored_garbage(connector: DemoOrderConnector) -> None:
        await connector.client.set(connector.key("LM2024051234"), "not json")
        await connector.lookup("LM2024051234")

    async def unreachable() -> None:
        client = Redis(port=free_port(), retry=Retry(NoBackoff(), 0), socket_connect_timeout=2)
        async with DemoOrderConnector(client, owns_client=True) as connector:
            await connector.lookup("LM2024051234")

    for attempt in (lambda: run(redis_url, stored_garbage), lambda: asyncio.run(unreachable())):
        try:
            attempt()
        except OrderLookupError:
            continue
        raise AssertionError("expected OrderLookupError")


def test_the_demo_connector_is_an_order_connector(redis_url):
    assert run(redis_url, lambda c: asyncio.sleep(0, isinstance(c, OrderConnector)))


def test_a_status_reads_from_the_order_else_from_its_code():
    when = datetime.fromisoformat("2024-05-14T09:12:00+08:00")
    own = Order("LM2024051234", "in_transit", when, "C1", {"zh": "运输中（顺丰）", "en": "In transit (SF)"})
    bare = Order("LM2024051235", "out_for_delivery", when, "C1")
    odd = Order("LM2024051236", "held_at_customs", when, "C1")
    assert (own.status_in("zh"), own.status_in("en")) == ("运输中（顺丰）", "In transit (SF)")
    assert (bare.status_in("zh"), bare.status_in("en")) == ("派送中", "Out for delivery")
    assert odd.status_in("en") == "held_at_customs"
    assert Order.from_dict(own.to_dict()) == own
