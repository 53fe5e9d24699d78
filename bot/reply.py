"""The bot's answer to one message, for the terminal chat (the service's dialogue policy builds on it).

Understand, then: the intent's response in the customer's language, asking for a missing
order number first; for a fallback, the closest article passage if one ranks among the
nearest entries of the index; else a polite "please rephrase".
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from bot.nlu.types import ParseResult
from bot.trained import TrainedBot
from knowledge_index.model import FALLBACK, KnowledgeBase

# An article passage is offered only if it is among the closest entries overall.
_ARTICLE_RANK = 3


@dataclass(frozen=True)
class BotReply:
    """The text the bot says, what it understood, and where the text came from."""

    text: str
    parse: ParseResult
    source: str  # response name, "article:<id>", "utter_default" or "not_connected"


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def reply(bot: TrainedBot, text: str) -> BotReply:
    """Understand ``text`` and choose the answer."""
    parse = bot.nlu.parse(text)
    language = parse.language
    slots = {e.entity: e.value for e in reversed(parse.entities)}  # the first value of each entity wins
    kb = bot.kb
    if parse.intent.name != FALLBACK:
        name = KnowledgeBase.response_name(parse.intent.name)
        variation = kb.response(name, language)
        if variation is not None:
            missing = _placeholders(variation.text) - slots.keys()
            if not missing:
                return BotReply(variation.text.format(**slots), parse, name)
            ask = kb.response(f"utter_ask_{sorted(missing)[0]}", language)
            if ask is not None:
                return BotReply(ask.text, parse, f"utter_ask_{sorted(missing)[0]}")
            # e.g. {status}: only an order connector can fill it, and the terminal chat has none.
            found = ", ".join(f"{k}={v}" for k, v in slots.items()) or "no entities"
            note = f"(understood {parse.intent.name} with {found}; answering it needs the order connector of the service)"
            return BotReply(note, parse, "not_connected")
    encoder = bot.nlu.classifier.featurizer.encoder
    if encoder is not None:
        hits = bot.index.search(encoder.encode([text])[0], k=_ARTICLE_RANK)
        article = next((h for h in hits if h.entry.kind == "article"), None)
        if article is not None:
            template = kb.response("utter_article", language)
            values = {"title": article.entry.title or "", "passage": article.entry.text}
            answer = template.text.format(**values) if template else f"{values['title']}\n{values['passage']}"
            return BotReply(answer, parse, f"article:{article.entry.article_id}")
    fallback = kb.response("utter_default", language)
    return BotReply(
        fallback.text if fallback else "Sorry, I did not understand that.", parse, "utter_default"
    )
