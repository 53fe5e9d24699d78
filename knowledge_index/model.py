"""The in-memory shape of a knowledge base. Built whole by the loader, or not at all."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT_OF_SCOPE = "out_of_scope"
FALLBACK = "nlu_fallback"
# The built-in intents that are conversation, not a question about something.
SMALL_TALK_INTENTS = ("greet", "goodbye", "thanks", "affirm", "deny")
# Intents whose meaning Baton knows (DESIGN.md).
BUILTIN_INTENTS = ("human_handoff", OUT_OF_SCOPE, *SMALL_TALK_INTENTS)
# Intents that say nothing about what the customer came for, so they are no topic and no answer.
NOT_A_TOPIC = frozenset({*BUILTIN_INTENTS, FALLBACK})
LANGUAGES = ("zh", "en")
# Chinese characters (CJK Unified Ideographs, Extension A, Compatibility Ideographs) as the body of a
# character class, so that a pattern for one character and one for a run share the same ranges.
CJK_RANGES = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
CJK_CHAR = re.compile(f"[{CJK_RANGES}]")


def has_cjk(text: str) -> bool:
    """True if ``text`` holds at least one Chinese character."""
    return CJK_CHAR.search(text) is not None


@dataclass(frozen=True)
class EntityAnnotation:
    """An entity marked in a training example: ``[LM2024051234](order_number)``."""

    entity: str
    start: int
    end: int
    value: str


@dataclass(frozen=True)
class Example:
    """One training example with its place in the source file."""

    text: str
    intent: str
    entities: tuple[EntityAnnotation, ...] = ()
    file: Path | None = None
    line: int | None = None


@dataclass
class NLUData:
    """Everything in a Rasa ``nlu.yml``."""

    examples: list[Example] = field(default_factory=list)
    synonyms: dict[str, str] = field(default_factory=dict)  # lower-cased variant -> canonical value
    regexes: dict[str, list[str]] = field(default_factory=dict)
    lookups: dict[str, list[str]] = field(default_factory=dict)

    @property
    def intents(self) -> list[str]:
        """Intent names in first-seen order."""
        return list(dict.fromkeys(e.intent for e in self.examples))


@dataclass(frozen=True)
class Variation:
    """One variation of a response; ``language`` is None for the unconditional default."""

    text: str
    language: str | None = None
    buttons: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Article:
    """A long-form help article (``articles/*.md``)."""

    id: str
    title: str
    language: str
    tags: tuple[str, ...]
    body: str
    file: Path | None = None


@dataclass
class KnowledgeBase:
    """A validated knowledge-base folder."""

    root: Path
    nlu: NLUData
    responses: dict[str, list[Variation]]
    articles: list[Article]
    handoff: dict[str, Any]
    fingerprint: str

    def response(self, name: str, language: str) -> Variation | None:
        """The variation of ``name`` for ``language``, else its default, else None."""
        variations = self.responses.get(name, [])
        for v in variations:
            if v.language == language:
                return v
        for v in variations:
            if v.language is None:
                return v
        return variations[0] if variations else None

    @staticmethod
    def response_name(intent: str) -> str:
        """``faq/returns`` -> ``utter_faq/returns``; ``greet`` -> ``utter_greet``."""
        return f"utter_{intent}"
