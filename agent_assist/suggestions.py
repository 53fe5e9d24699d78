"""Suggested replies and knowledge search for the agent who takes a handed-off chat.

:class:`ReplySuggester` is built once per knowledge base (and, optionally, its vector index and
encoder) and precomputes everything a suggestion needs: each intent's answer text per language, the
article passages and a keyword index over both. Per customer message it then only looks things up:

- :meth:`ReplySuggester.suggest` merges the NLU's ranking of the message with a vector search of the
  message (when an encoder and index are given) into knowledge-base answers in the customer's
  language, and adds one apology or acknowledgement that fits why the chat was handed over.
- :meth:`ReplySuggester.search` is the agent's search box: answers and article passages for a query,
  by keyword match (Chinese character n-grams, English word stems), plus vector search when available.

Scores are on one scale so that signals can be merged: the NLU's confidence as it is, a vector
search as a softmax over the retrieved sources (cosines of one encoder are close together, so their
differences matter, not their level), a keyword match as the share of the query's information a
source covers (BM25 over features, divided by the best a source could score).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from knowledge_index.articles import chunk_article
from knowledge_index.encoders import Encoder
from knowledge_index.index import Entry, VectorIndex
from knowledge_index.model import CJK_RANGES, LANGUAGES, NOT_A_TOPIC, KnowledgeBase, has_cjk
from knowledge_index.templates import fill, placeholders, without_placeholders

# Intents whose responses are not answers an agent would send.
SKIPPED_INTENTS = NOT_A_TOPIC
DEFAULT_LANGUAGE = "en"

# Weights of the signals merged by suggest() and search(), among those present in a call.
_SUGGEST_WEIGHTS = {"nlu": 0.6, "vector": 0.4}
_SEARCH_WEIGHTS = {"keyword": 0.5, "vector": 0.5}
_VECTOR_K = 32  # index entries fetched per vector search
# Softmax temperature for cosines: e5's relevant and unrelated entries are ~0.05 apart.
_TEMPERATURE = 0.02
_KEYWORD_FLOOR = 0.15  # a keyword match covering less of the query than this is noise
_TITLE_WEIGHT = 2  # how many times an intent's name counts among its keywords
_VECTOR_FLOOR = 0.02  # a search result's least share of the vector search's softmax
# BM25 parameters; a soft length normalisation, because an intent's document (all its examples and
# answers) is long precisely when it is a rich topic.
_K1 = 1.2
_B = 0.5

_CJK_RUN = re.compile(f"[{CJK_RANGES}]+")
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "no",
        "not",
        "of",
        "on",
        "or",
        "our",
        "so",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "too",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "please",
        "hi",
        "hello",
    ]
)


@dataclass(frozen=True)
class Suggestion:
    """One suggested reply or search result.

    Attributes:
        text: what the agent can send, in the customer's language, with no placeholder left.
        kind: "answer" (a knowledge-base response), "article" (a passage), "apology" or "acknowledgement".
        source: where it came from: ``utter_faq/return_policy``, ``article:returns#2`` (the passage's
            number in its article, from 1), ``reason:negative_sentiment``.
        score: how well it fits, 0-1, on one scale for the answers of one call.
    """

    text: str
    kind: str
    source: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"text": self.text, "kind": self.kind, "source": self.source, "score": round(self.score, 4)}


# The opening line for the first escalation reason: (kind, {language: text}). Each is complete on its
# own (no placeholder) and does not promise anything the agent has not checked.
_OPENERS: dict[str, tuple[str, dict[str, str]]] = {
    "negative_sentiment": (
        "apology",
        {
            "zh": "非常抱歉给您带来了不好的体验，让您着急了！我是人工客服，接下来由我亲自为您处理，一定尽快帮您解决。",
            "en": "I'm truly sorry for the trouble and frustration this has caused you. I'm from the customer service team, and I'll personally look into it now and stay with you until it's sorted out.",
        },
    ),
    "explicit_request": (
        "acknowledgement",
        {
            "zh": "您好，我是人工客服，很高兴为您服务！之前的对话记录我已经看过了，您不用再重复说明，请问还有什么需要补充的吗？",
            "en": "Hi, I'm here to help. I'm from the customer service team and I've read through your conversation so far, so you don't need to repeat anything. Is there anything you'd like to add?",
        },
    ),
    "repeated_question": (
        "apology",
        {
            "zh": "抱歉让您反复询问同一个问题，给您添麻烦了！接下来由我为您跟进，一定给您一个明确的答复。",
            "en": "I'm sorry you've had to ask the same thing several times and that we've been going round in circles. I'm taking this over now and will get you a clear answer.",
        },
    ),
    "sensitive_topic": (
        "apology",
        {
            "zh": "非常抱歉发生这样的情况，感谢您告诉我们！我们非常重视您反馈的问题，接下来由我亲自为您处理，并及时向您同步进展。",
            "en": "I'm very sorry about what happened, and thank you for letting us know. We take this seriously: I'll handle it personally and keep you updated until it's resolved.",
        },
    ),
    "fallback_streak": (
        "apology",
        {
            "zh": "抱歉刚才智能客服没能帮到您！我是人工客服，您之前的消息我都看到了，接下来由我为您处理。",
            "en": "I'm sorry our automated assistant couldn't help you with this. I'm from the customer service team, I've read your messages, and I'll take it from here.",
        },
    ),
    "too_many_turns": (
        "acknowledgement",
        {
            "zh": "感谢您的耐心！我是人工客服，已经了解了您之前的情况，接下来由我为您跟进处理。",
            "en": "Thank you for your patience. I'm from the customer service team, I've caught up on your conversation, and I'll take it from here to get this sorted for you.",
        },
    ),
}
_GENERIC_OPENER = (
    "acknowledgement",
    {
        "zh": "您好，感谢您的耐心等待！我是人工客服，接下来由我为您服务。",
        "en": "Hi, thanks for waiting. I'm from the customer service team and I'll help you from here.",
    },
)
# Reasons whose opener comes before the answers: an upset customer first needs to hear it.
_OPENER_FIRST = frozenset({"negative_sentiment", "sensitive_topic"})


def _lang(language: str | None) -> str:
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def _fill(template: str, values: Mapping[str, str]) -> str | None:
    """``template`` with every placeholder filled, or None if one has no value or it is broken."""
    names = placeholders(template)
    if names is None or any(not values.get(name) for name in names):
        return None
    return fill(template, values)


def _stem(word: str) -> str:
    """A light English stemmer: enough for "returns", "returned", "returning" to meet "return"."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            word = word[: len(word) - len(suffix)] + keep
            break
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
        word = word[:-1]  # shipping -> shipp -> ship
    return word


def features(text: str) -> Counter[str]:
    """Keyword features of ``text``: Chinese characters and character bigrams, English word stems
    (stop words left out), numbers."""
    text = unicodedata.normalize("NFKC", text).lower()
    found: Counter[str] = Counter()
    for run in _CJK_RUN.findall(text):
        found.update(run)
        found.update(run[i : i + 2] for i in range(len(run) - 1))
    for word in _WORD.findall(_CJK_RUN.sub(" ", text)):
        if word not in _STOP_WORDS:
            found[_stem(word)] += 1
    return found


@dataclass(frozen=True)
class _Passage:
    """An article passage as a suggestion can show it."""

    source: str
    language: str
    text: str


class _KeywordIndex:
    """BM25 over feature counts, scores normalised to 0-1 (see the module docstring)."""

    def __init__(self, documents: Mapping[str, Counter[str]]) -> None:
        self._postings: dict[str, list[tuple[str, float]]] = defaultdict(list)
        lengths = {key: sum(counts.values()) for key, counts in documents.items()}
        average = (sum(lengths.values()) / len(lengths)) if lengths else 1.0
        for key, counts in documents.items():
            norm = _K1 * (1 - _B + _B * lengths[key] / max(average, 1.0))
            for feature, tf in counts.items():
                # The saturated term frequency, precomputed: a query only adds these up.
                self._postings[feature].append((key, tf * (_K1 + 1) / (tf + norm)))
        total = len(documents)
        self._idf = {
            feature: math.log(1 + (total - len(posting) + 0.5) / (len(posting) + 0.5))
            for feature, posting in self._postings.items()
        }

    def scores(self, query: str) -> dict[str, float]:
        """Every document matching ``query``, with the share of the query's weight it covers."""
        wanted = set(features(query))
        if not wanted:
            return {}
        # An unknown feature still counts in the denominator: a query about something absent
        # from the knowledge base should not look like a perfect match on its other words.
        unknown = max(self._idf.values(), default=1.0)
        best = sum(self._idf.get(f, unknown) for f in wanted) * (_K1 + 1)
        totals: dict[str, float] = defaultdict(float)
        for feature in wanted:
            idf = self._idf.get(feature)
            if idf is None:
                continue
            for key, weight in self._postings[feature]:
                totals[key] += idf * weight
        return {key: total / best for key, total in totals.items()}


def _softmax(cosines: Mapping[str, float]) -> dict[str, float]:
    if not cosines:
        return {}
    top = max(cosines.values())
    exps = {key: math.exp((c - top) / _TEMPERATURE) for key, c in cosines.items()}
    total = sum(exps.values())
    return {key: value / total for key, value in exps.items()}


def _merge(signals: Mapping[str, Mapping[str, float]], weights: Mapping[str, float]) -> dict[str, float]:
    """Weighted mean of the signals present; a source a signal did not find gets 0 from it."""
    present = [name for name in signals if name in weights]
    total = sum(weights[name] for name in present) or 1.0
    merged: dict[str, float] = defaultdict(float)
    for name in present:
        for source, score in signals[name].items():
            merged[source] += weights[name] * score / total
    return merged


def _ranking_pairs(ranking: Sequence[Any]) -> list[tuple[str, float]]:
    """``(intent, confidence)`` pairs; ``{"name", "confidence"}`` dicts (``ParseResult.to_dict``) also do."""
    pairs = []
    for item in ranking:
        if isinstance(item, Mapping):
            name, confidence = item.get("name"), item.get("confidence")
        else:
            name, confidence = item[0], item[1]
        if isinstance(name, str):
            pairs.append((name, float(confidence or 0.0)))
    return pairs


class ReplySuggester:
    """Suggested replies and knowledge search over one knowledge base.

    Args:
        kb: the knowledge base.
        index: its vector index (optional; used only together with ``encoder``).
        encoder: the encoder the index was built with.
    """

    def __init__(
        self, kb: KnowledgeBase, index: VectorIndex | None = None, encoder: Encoder | None = None
    ) -> None:
        self.kb = kb
        self.index = index if encoder is not None else None
        self.encoder = encoder if index is not None else None
        # intent -> language -> response template, for every intent an agent could answer with.
        self._answers: dict[str, dict[str, str]] = {}
        for intent in kb.nlu.intents:
            if intent in SKIPPED_INTENTS:
                continue
            by_language = {
                language: text
                for language in LANGUAGES
                if (text := self._template(KnowledgeBase.response_name(intent), language)) is not None
            }
            if by_language:
                self._answers[intent] = by_language
        self._passages: dict[str, _Passage] = {}
        self._passage_of: dict[tuple[str, str], str] = {}  # (article id, passage text) -> source
        documents: dict[str, Counter[str]] = {}
        examples: dict[str, list[str]] = defaultdict(list)
        for example in kb.nlu.examples:
            examples[example.intent].append(example.text)
        for intent, by_language in self._answers.items():
            counts = Counter[str]()
            for text in [*examples[intent], *by_language.values()]:
                counts.update(features(without_placeholders(text)))
            # The intent's name (faq/return_policy) is the topic's title: its words count twice.
            for _ in range(_TITLE_WEIGHT):
                counts.update(features(intent.rsplit("/", 1)[-1].replace("_", " ")))
            documents[KnowledgeBase.response_name(intent)] = counts
        for article in kb.articles:
            for number, chunk in enumerate(chunk_article(article), start=1):
                source = f"article:{article.id}#{number}"
                self._passages[source] = _Passage(source, chunk.language, chunk.text)
                self._passage_of[(article.id, chunk.text)] = source
                documents[source] = features(f"{chunk.title}\n{chunk.section}\n{chunk.text}")
        self._keywords = _KeywordIndex(documents)
        # Index entries that are article passages, numbered the same way when the index was built
        # from another version of the knowledge base.
        self._entry_sources: dict[int, str] = {}  # id() of an index entry -> its source
        if self.index is not None:
            numbers: Counter[str] = Counter()
            for entry in self.index.entries:
                if entry.kind == "article" and entry.article_id:
                    numbers[entry.article_id] += 1
                    source = self._passage_of.get((entry.article_id, entry.text))
                    if source is None:
                        source = f"article:{entry.article_id}#{numbers[entry.article_id]}"
                        self._passages.setdefault(source, _Passage(source, entry.language, entry.text))
                    self._entry_sources[id(entry)] = source

    # -- texts --------------------------------------------------------------------------------

    def _template(self, name: str, language: str) -> str | None:
        """The response's variation for ``language``, else its unconditioned one if it is written in
        that language (a default in English is no answer for a Chinese customer), else None."""
        variations = self.kb.responses.get(name, [])
        for variation in variations:
            if variation.language == language and variation.text.strip():
                return variation.text
        for variation in variations:
            if variation.language is None and variation.text.strip():
                written = "zh" if has_cjk(without_placeholders(variation.text)) else "en"
                return variation.text if written == language else None
        return None

    def _text(self, source: str, language: str, slots: Mapping[str, str]) -> tuple[str, str] | None:
        """``(kind, text)`` of a source for the customer, or None if it has none in ``language``."""
        if source.startswith("article:"):
            passage = self._passages.get(source)
            if passage is None or passage.language != language:
                return None
            return "article", passage.text
        template = self._answers.get(source.removeprefix("utter_"), {}).get(language)
        if template is None:
            return None
        text = _fill(template, slots)
        return None if text is None else ("answer", text)

    def _vector_cosines(self, text: str) -> dict[str, float]:
        """Each source's best cosine to ``text`` among the index's nearest entries."""
        if self.index is None or self.encoder is None or not text.strip():
            return {}
        query = np.asarray(self.encoder.encode([text], kind="query")[0], dtype=np.float32)
        cosines: dict[str, float] = {}
        for hit in self.index.search(query, k=_VECTOR_K):
            source = self._entry_source(hit.entry)
            if source is not None and hit.score > cosines.get(source, -2.0):
                cosines[source] = hit.score
        return cosines

    def _entry_source(self, entry: Entry) -> str | None:
        # The index hands back its own entry objects, so their id() finds the passage's source.
        if entry.kind == "example" and entry.intent in self._answers:
            return KnowledgeBase.response_name(entry.intent)
        if entry.kind == "article":
            return self._entry_sources.get(id(entry))
        return None

    def _rank(
        self, scores: Mapping[str, float], language: str, slots: Mapping[str, str], limit: int
    ) -> list[Suggestion]:
        """The best ``limit`` sources that have a text for the customer, best first, no text twice."""
        found: list[Suggestion] = []
        seen: set[str] = set()
        for source, score in sorted(scores.items(), key=lambda item: (-item[1], item[0])):
            if len(found) >= limit:
                break
            kind_text = self._text(source, language, slots)
            if kind_text is None or kind_text[1] in seen:
                continue
            seen.add(kind_text[1])
            found.append(Suggestion(kind_text[1], kind_text[0], source, float(score)))
        return found

    # -- the public API -----------------------------------------------------------------------

    def suggest(
        self,
        message: str,
        language: str,
        ranking: Sequence[tuple[str, float]] = (),
        reasons: Sequence[str] = (),
        slots: Mapping[str, str] | None = None,
        count: int = 3,
    ) -> list[Suggestion]:
        """Suggested replies to the customer's last message.

        Args:
            message: the customer's last message.
            language: the customer's language ("zh" or "en"; anything else is English).
            ranking: the NLU's ranking of ``message``: ``(intent, confidence)``, most confident first.
            reasons: the escalation reason codes; the first picks the apology or acknowledgement.
            slots: known slot values (``order_number``, ``status``, ...) for the answers' placeholders.
            count: how many suggestions to return.

        Returns:
            ``count`` suggestions when the knowledge base has enough answers (fewer otherwise): the
            best ``count - 1`` answers in ``language`` and one apology or acknowledgement, which comes
            first for an upset customer or a sensitive topic and last otherwise.
        """
        if count <= 0:
            return []
        language = _lang(language)
        slots = {str(k): str(v) for k, v in (slots or {}).items() if v is not None}
        signals: dict[str, dict[str, float]] = {}
        pairs = _ranking_pairs(ranking)
        if pairs:
            nlu: dict[str, float] = {}
            for intent, confidence in pairs:
                if intent in self._answers:
                    source = KnowledgeBase.response_name(intent)
                    nlu[source] = max(nlu.get(source, 0.0), confidence)
            signals["nlu"] = nlu
        cosines = self._vector_cosines(message)
        if cosines:
            signals["vector"] = _softmax(
                {s: c for s, c in cosines.items() if self._text(s, language, slots) is not None}
            )
        if signals:
            scores = _merge(signals, _SUGGEST_WEIGHTS)
        else:
            # Neither an NLU ranking nor an index: the keyword match is all there is to go on.
            scores = {s: v for s, v in self._keywords.scores(message).items() if v >= _KEYWORD_FLOOR}
        answers = self._rank(scores, language, slots, count - 1)
        return self._with_opener(answers, reasons, language)

    def _with_opener(
        self, answers: list[Suggestion], reasons: Sequence[str], language: str
    ) -> list[Suggestion]:
        reason = next((r for r in reasons if isinstance(r, str) and r), None)
        kind, texts = _OPENERS.get(reason or "", _GENERIC_OPENER)
        first = reason in _OPENER_FIRST
        # Its score keeps the list's order when a caller sorts by score.
        score = 1.0 if first or not answers else min(a.score for a in answers)
        opener = Suggestion(texts[language], kind, f"reason:{reason or 'none'}", score)
        return [opener, *answers] if first else [*answers, opener]

    def search(self, query: str, language: str, limit: int = 10) -> list[Suggestion]:
        """Answers and article passages matching ``query``, in ``language``, best first.

        Keyword matching works on its own; with an encoder and index, vector search is merged in.
        Answers whose placeholders need a conversation's slots (``{order_number}``) are left out.
        """
        if not query or not query.strip() or limit <= 0:
            return []
        language = _lang(language)
        signals: dict[str, dict[str, float]] = {
            "keyword": {s: v for s, v in self._keywords.scores(query).items() if v >= _KEYWORD_FLOOR}
        }
        cosines = self._vector_cosines(query)
        if cosines:
            found = _softmax({s: c for s, c in cosines.items() if self._text(s, language, {})})
            # A search box lists what matches, not everything the index holds: drop the long tail.
            signals["vector"] = {s: p for s, p in found.items() if p >= _VECTOR_FLOOR}
        return self._rank(_merge(signals, _SEARCH_WEIGHTS), language, {}, limit)
