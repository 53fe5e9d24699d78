"""The bot's answer to one message, for the terminal chat (the service's dialogue policy builds on it).

Understand, then: the intent's response in the customer's language; for a fallback,
the closest article passage if the index has a close one; else a polite "please rephrase".
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.nlu.types import ParseResult
from bot.trained import TrainedBot
from knowledge_index.model import FALLBACK, KnowledgeBase

# An article passage is offered only if it is among the closest entries overall (the query
# is about the article, not about a FAQ the classifier already rejected).
_ARTICLE_RANK = 3


@dataclass(frozen=True)
class BotReply:
    """The text the bot says and what it understood."""

    text: str
    parse: ParseResult
    source: str  # response name, "article:<id>" or "utter_default"


def _render(kb: KnowledgeBase, name: str, language: str, slots: dict[str, str]) -> str | None:
    variation = kb.response(name, language)
    if variation is None:
        return None
    try:
        return variation.text.format(**slots)
    except (KeyError, IndexError):
        return None  # a placeholder we cannot fill: let the caller ask for it


def reply(bot: TrainedBot, text: str) -> BotReply:
    """Understand ``text`` and choose the answer."""
    parse = bot.nlu.parse(text)
    language = parse.language
    slots = {"order_number": next(iter(parse.entity_values("order_number")), None)}
    slots = {k: v for k, v in slots.items() if v}
    if parse.intent.name != FALLBACK:
        name = KnowledgeBase.response_name(parse.intent.name)
        rendered = _render(bot.kb, name, language, slots | {"status": "being prepared"})
        if rendered is not None:
            return BotReply(rendered, parse, name)
        if "order_number" not in slots:
            asked = _render(bot.kb, "utter_ask_order_number", language, {})
            if asked:
                return BotReply(asked, parse, "utter_ask_order_number")
    encoder = bot.nlu.classifier.featurizer.encoder
    if encoder is not None:
        hits = bot.index.search(encoder.encode([text])[0], k=_ARTICLE_RANK)
        article = next((h for h in hits if h.entry.kind == "article"), None)
        if article is not None:
            slots = {"title": article.entry.title or "", "passage": article.entry.text}
            rendered = _render(bot.kb, "utter_article", language, slots)
            text_out = rendered or f"{article.entry.title}\n{article.entry.text}"
            return BotReply(text_out, parse, f"article:{article.entry.article_id}")
    fallback = _render(bot.kb, "utter_default", language, {}) or "Sorry, I did not understand that."
    return BotReply(fallback, parse, "utter_default")
