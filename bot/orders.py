"""Order look-ups for the bot: the connector interface, and a demo connector over seed data in Redis.

A retailer plugs its order system in behind :class:`OrderConnector`. Baton ships
:class:`DemoOrderConnector`, which answers from orders seeded into Redis from
``bot/demo_orders.json`` (fictional Lumo orders), so the order-status path can be
shown and tested end to end without a real back office.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from conversations.keys import DEFAULT_PREFIX
from conversations.redis_client import RedisClientHolder, connect

SEED_FILE = Path(__file__).resolve().with_name("demo_orders.json")
STATUSES = ("paid", "shipped", "in_transit", "out_for_delivery", "delivered", "cancelled")
# How a status code reads when an order carries no text of its own for the language.
STATUS_LABELS: dict[str, dict[str, str]] = {
    "zh": {
        "paid": "已付款，等待发货",
        "shipped": "已发货",
        "in_transit": "运输中",
        "out_for_delivery": "派送中",
        "delivered": "已签收",
        "cancelled": "已取消",
    },
    "en": {
        "paid": "Paid, waiting to ship",
        "shipped": "Shipped",
        "in_transit": "In transit",
        "out_for_delivery": "Out for delivery",
        "delivered": "Delivered",
        "cancelled": "Cancelled",
    },
}
_LUMO_NUMBER = re.compile(r"LM\d{10}")
_DIGITS_ONLY = re.compile(r"\d{10}")


class OrderLookupError(RuntimeError):
    """The order system could not be asked (as opposed to: it has no such order)."""


@dataclass(frozen=True)
class OrderItem:
    """One line of an order."""

    name: str
    quantity: int = 1
    sku: str | None = None


@dataclass(frozen=True)
class Order:
    """An order as the bot may tell a customer about it.

    ``status`` is a code from :data:`STATUSES` (an unknown code is kept as it is);
    ``status_text`` holds the order system's own wording per language ("zh", "en").
    """

    number: str
    status: str
    updated_at: datetime
    customer_ref: str
    status_text: Mapping[str, str] = field(default_factory=dict)
    carrier: str | None = None
    items: tuple[OrderItem, ...] = ()

    def status_in(self, language: str) -> str:
        """The status in ``language``: the order's own text, else the label of its code, else the code."""
        if self.status_text.get(language):
            return self.status_text[language]
        return STATUS_LABELS.get(language, STATUS_LABELS["en"]).get(self.status, self.status)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape used by the seed file and the Redis values."""
        return {
            "number": self.number,
            "status": self.status,
            "status_text": dict(self.status_text),
            "carrier": self.carrier,
            "items": [{"name": i.name, "quantity": i.quantity, "sku": i.sku} for i in self.items],
            "updated_at": self.updated_at.isoformat(),
            "customer_ref": self.customer_ref,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Order:
        """Read the shape written by :meth:`to_dict`.

        Raises:
            KeyError, ValueError: a required field is missing or malformed.
        """
        return cls(
            number=normalize_order_number(str(data["number"])),
            status=str(data["status"]),
            updated_at=datetime.fromisoformat(str(data["updated_at"])),
            customer_ref=str(data["customer_ref"]),
            status_text={str(k): str(v) for k, v in (data.get("status_text") or {}).items()},
            carrier=data.get("carrier"),
            items=tuple(
                OrderItem(str(i["name"]), int(i.get("quantity", 1)), i.get("sku"))
                for i in data.get("items") or ()
            ),
        )


def normalize_order_number(text: str) -> str:
    """An order number in its stored form: ``lm 2024-051234`` and ``2024051234`` -> ``LM2024051234``.

    Customers type the Lumo format (LM + 10 digits) in lower case, with spaces or dashes,
    or without the prefix (the knowledge base's regex accepts 10 bare digits).
    Anything else is returned upper-cased and without separators, and simply will not be found.
    """
    compact = re.sub(r"[\s-]", "", text).upper()
    if _DIGITS_ONLY.fullmatch(compact):
        return "LM" + compact
    return compact


def load_seed_orders(path: Path = SEED_FILE) -> list[Order]:
    """The orders of a seed file: ``{"orders": [<Order.to_dict() shape>, ...]}``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return [Order.from_dict(item) for item in data["orders"]]


@runtime_checkable
class OrderConnector(Protocol):
    """Finds an order by its number in the retailer's order system."""

    async def lookup(self, order_number: str) -> Order | None:
        """The order numbered ``order_number``, or None if there is none.

        Raises:
            OrderLookupError: the order system could not be reached or answered nonsense.
        """


class DemoOrderConnector(RedisClientHolder):
    """Implements :class:`OrderConnector` over demo orders in Redis, one JSON string per order.

    Keys are ``{prefix}demo:order:{number}`` (``baton:demo:order:LM2024051234`` by default).
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX, owns_client: bool = False) -> None:
        self.client = client
        self.prefix = prefix
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> Self:
        """A connector with its own client for ``url`` (``redis://host:port/db``)."""
        return cls(connect(url), prefix=prefix, owns_client=True)

    def key(self, order_number: str) -> str:
        """The Redis key of an order."""
        return f"{self.prefix}demo:order:{normalize_order_number(order_number)}"

    async def seed(self, orders: Path | Iterable[Order] = SEED_FILE) -> int:
        """Store the demo orders (a seed file or orders); return how many.

        Idempotent: each order is written whole under its own key in one MSET, so seeding
        again leaves the same data (and resets orders changed since to their seed state).

        Raises:
            OrderLookupError: Redis could not be reached.
        """
        items = load_seed_orders(orders) if isinstance(orders, Path) else list(orders)
        if not items:
            return 0
        mapping = {self.key(o.number): json.dumps(o.to_dict(), ensure_ascii=False) for o in items}
        try:
            await self.client.mset(mapping)
        except RedisError as exc:
            raise OrderLookupError(f"could not seed the demo orders: {exc}") from exc
        return len(mapping)

    async def lookup(self, order_number: str) -> Order | None:
        """The demo order numbered ``order_number`` (normalised first), or None.

        Raises:
            OrderLookupError: Redis could not be reached, or the stored value is not an order.
        """
        try:
            raw = await self.client.get(self.key(order_number))
        except RedisError as exc:
            raise OrderLookupError(f"could not look up order {order_number}: {exc}") from exc
        if raw is None:
            return None
        try:
            return Order.from_dict(json.loads(raw))
        except (KeyError, TypeError, ValueError) as exc:
            raise OrderLookupError(f"order {order_number} is stored in an unreadable form: {exc}") from exc
