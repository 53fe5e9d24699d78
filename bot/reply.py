"""The terminal chat's conversation: the dialogue policy with a context kept from turn to turn.

The terminal has no order system, so order-status questions take the policy's honest
"cannot look orders up here" path instead of inventing a status.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from bot.dialogue import BotAction, DialogueContext, DialoguePolicy
from bot.orders import OrderConnector
from bot.trained import TrainedBot


class ChatSession:
    """One conversation with a trained bot, on an event loop of its own (close it when done).

    Every turn runs on the same loop, so a connector's connections stay usable from turn to turn.

    Args:
        bot: the trained knowledge base, NLU and index.
        connector: the order system, if there is one; the session closes it.
    """

    def __init__(self, bot: TrainedBot, connector: OrderConnector | None = None) -> None:
        self.policy = DialoguePolicy.for_bot(bot, connector)
        self.context = DialogueContext()
        self._runner = asyncio.Runner()

    def send(self, text: str) -> BotAction:
        """The bot's action for the customer's message ``text``; the context moves on."""
        action = self._runner.run(self.policy.respond(text, self.context))
        self.context = action.context
        return action

    def close(self) -> None:
        """Close the connector (the session owns it, as its connections live on this loop), then the loop."""
        try:
            closer = getattr(self.policy.connector, "aclose", None)
            if closer is not None:
                self._runner.run(closer())
        finally:
            self._runner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def render(action: BotAction) -> str:
    """How the terminal shows an action: the text, a line per button, then what was understood."""
    lines = [f"bot> {action.text}"]
    lines += [f"     [{b['title']} -> {b['payload']}]" for b in action.buttons]
    if action.parse is not None:
        intent = action.parse.intent
        lines.append(f"     [{intent.name} {intent.confidence:.2f}, {action.language}, {action.source}]")
    return "\n".join(lines) + "\n"
