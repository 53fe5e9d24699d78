"""A Rasa server as Baton's NLU engine: ``POST /model/parse`` turned into Baton's `ParseResult`.

Rasa understands; Baton still answers, escalates and hands off. Rasa does not tell the
language of a message, so Baton's own rule does (`detect_language`). A retrieval intent
(``faq``) is reported by Rasa's ResponseSelector as ``faq/<topic>``; Baton's dialogue wants
that full name, with the confidence of both decisions together (their product).

Every failure (no connection, a timeout, an error status, an answer that is not Rasa's)
raises `RasaUnavailable`, which `bot.nlu.fallback.FallbackEngine` turns into a parse by
Baton's own engine: a slow or absent Rasa is never the customer's problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bot.nlu.language import detect_language
from bot.nlu.types import Entity, IntentScore, ParseResult
from knowledge_index.model import FALLBACK

_RANKING_SIZE = 10


class RasaUnavailable(Exception):
    """The Rasa server did not give a usable parse (down, slow, an error, or a foreign answer)."""


class RasaNLU:
    """Implements :class:`bot.nlu.types.NLUEngine` over a Rasa server's HTTP API.

    Args:
        url: the Rasa server, e.g. ``http://127.0.0.1:5005``.
        token: Rasa's ``--auth-token``, sent as the ``token`` query parameter, if the server has one.
        timeout: seconds to wait for one parse (connection included).
        transport: an httpx transport (tests use a mock one to play a slow or broken server).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 1.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._params = {"token": token} if token else {}
        self._client = httpx.Client(base_url=self.url, timeout=timeout, transport=transport)

    def parse(self, text: str) -> ParseResult:
        """Understand ``text`` with Rasa.

        Raises:
            RasaUnavailable: no usable answer within ``timeout`` seconds.
        """
        try:
            response = self._client.post("/model/parse", params=self._params, json={"text": text})
        except httpx.TimeoutException:
            raise RasaUnavailable(f"Rasa at {self.url} did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise RasaUnavailable(f"Rasa at {self.url} is unreachable: {exc}") from None
        if response.status_code != 200:
            raise RasaUnavailable(
                f"Rasa at {self.url} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            return to_parse_result(text, response.json())
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RasaUnavailable(f"Rasa at {self.url} gave an answer Baton cannot read: {exc!r}") from None

    def parse_batch(self, texts: Sequence[str]) -> list[ParseResult]:
        """Understand each of ``texts`` in turn (Rasa's API parses one message per request)."""
        return [self.parse(text) for text in texts]

    def ready(self) -> bool:
        """True when the server answers and has a model loaded (``GET /status``)."""
        try:
            response = self._client.get("/status", params=self._params)
            return response.status_code == 200 and bool(response.json().get("model_file"))
        except (httpx.HTTPError, ValueError):  # not up yet, or something else answering
            return False

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    def __enter__(self) -> RasaNLU:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def to_parse_result(text: str, data: Mapping[str, Any]) -> ParseResult:
    """Baton's reading of one ``/model/parse`` answer for ``text``.

    Raises:
        KeyError, TypeError, ValueError: ``data`` is not shaped like Rasa's answer.
    """
    intent = data["intent"]
    if not isinstance(intent, Mapping) or not intent.get("name"):
        # Rasa answers {"intent": {"name": null}} when its model has no intent classifier.
        raise ValueError("the answer names no intent")
    selectors = data.get("response_selector") or {}
    ranking = _ranking(data.get("intent_ranking") or [intent], selectors)
    top = _full_intent(IntentScore(str(intent["name"]), float(intent["confidence"])), selectors)
    entities = _entities(text, data.get("entities") or [])
    guess = detect_language(text)
    if top.name == FALLBACK and ranking and ranking[0].name == FALLBACK:
        ranking = ranking[1:]  # keep the engine's best real guesses, as Baton's own engine does
    return ParseResult(text, guess.language, top, ranking[:_RANKING_SIZE], entities, guess.mixed)


def _selector(name: str, selectors: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ResponseSelector's answer for retrieval intent ``name`` (trained per intent or as ``default``)."""
    if name not in selectors.get("all_retrieval_intents", ()):
        return None
    return selectors.get(name) or selectors.get("default")


def _full_intent(score: IntentScore, selectors: Mapping[str, Any]) -> IntentScore:
    """``faq`` -> ``faq/<topic>`` with the joint confidence; other intents as they are."""
    selected = _selector(score.name, selectors)
    if not selected:
        return score
    response = selected.get("response") or {}
    key = response.get("intent_response_key")
    if not key:
        return score
    return IntentScore(str(key), score.confidence * float(response.get("confidence", 0.0)))


def _ranking(
    intent_ranking: Sequence[Mapping[str, Any]], selectors: Mapping[str, Any]
) -> tuple[IntentScore, ...]:
    """Rasa's intent ranking with each retrieval intent spread over its topics (joint confidences)."""
    scores: list[IntentScore] = []
    for row in intent_ranking:
        name, confidence = str(row["name"]), float(row["confidence"])
        selected = _selector(name, selectors)
        topics = (selected or {}).get("ranking") or []
        if not topics:
            scores.append(IntentScore(name, confidence))
            continue
        scores += [
            IntentScore(str(t["intent_response_key"]), confidence * float(t["confidence"])) for t in topics
        ]
    return tuple(sorted(scores, key=lambda s: -s.confidence))


def _entities(text: str, found: Sequence[Mapping[str, Any]]) -> tuple[Entity, ...]:
    """Rasa's entities in text order, each span once: the regex extractor and DIET often find
    the same order number, and Baton's dialogue wants one value per place in the text."""
    entities: dict[tuple[str, int, int], Entity] = {}
    for raw in found:
        start, end = int(raw["start"]), int(raw["end"])
        key = (str(raw["entity"]), start, end)
        entities.setdefault(
            key,
            Entity(
                entity=key[0],
                value=str(raw["value"]),
                start=start,
                end=end,
                text=text[start:end],
                extractor=str(raw.get("extractor") or "rasa"),
            ),
        )
    return tuple(sorted(entities.values(), key=lambda e: e.start))
