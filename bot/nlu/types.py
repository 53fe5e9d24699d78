"""What understanding a message produces, and the seam every NLU engine implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class IntentScore:
    """An intent name and its calibrated confidence (0-1)."""

    name: str
    confidence: float


@dataclass(frozen=True)
class Entity:
    """An entity found in the text: ``value`` is normalised (synonyms applied), ``text`` as written."""

    entity: str
    value: str
    start: int
    end: int
    text: str
    extractor: str


@dataclass(frozen=True)
class ParseResult:
    """The understanding of one message.

    ``intent`` is ``nlu_fallback`` when the engine is not confident enough;
    ``ranking`` still holds the engine's best guesses, most confident first.
    """

    text: str
    language: str
    intent: IntentScore
    ranking: tuple[IntentScore, ...] = ()
    entities: tuple[Entity, ...] = field(default=())
    mixed_language: bool = False

    @property
    def retrieval_intent(self) -> str | None:
        """``faq`` for ``faq/returns``; None for a plain intent."""
        return self.intent.name.split("/", 1)[0] if "/" in self.intent.name else None

    def entity_values(self, name: str) -> list[str]:
        """Every value found for entity ``name``, in text order."""
        return [e.value for e in self.entities if e.entity == name]

    def to_dict(self, ranking_size: int = 3) -> dict[str, Any]:
        """A JSON-ready summary, as kept with the customer's turn (the text is the turn's own)."""
        return {
            "intent": self.intent.name,
            "confidence": round(self.intent.confidence, 4),
            "ranking": [
                {"name": s.name, "confidence": round(s.confidence, 4)} for s in self.ranking[:ranking_size]
            ],
            "entities": [
                {"entity": e.entity, "value": e.value, "start": e.start, "end": e.end} for e in self.entities
            ],
            "language": self.language,
        }


@runtime_checkable
class NLUEngine(Protocol):
    """Understands one message. Baton's own engine and the Rasa adapter both implement this."""

    def parse(self, text: str) -> ParseResult:
        """Understand ``text``."""


class BatchParser(Protocol):
    """An NLU engine that parses several messages at once (what the service's NLU worker drives)."""

    def parse_batch(self, texts: Sequence[str]) -> list[ParseResult]:
        """Understand ``texts``, in order."""
