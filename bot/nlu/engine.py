"""Baton's own NLU engine: language, intent with calibrated confidence and fallback, entities."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import joblib
import numpy as np

from bot.nlu.classifier import IntentClassifier
from bot.nlu.entities import EntityExtractor
from bot.nlu.language import detect_language
from bot.nlu.shortcut import LexicalShortcut
from bot.nlu.types import IntentScore, ParseResult
from knowledge_index.encoders import Encoder, get_encoder
from knowledge_index.errors import IndexMismatchError
from knowledge_index.model import FALLBACK, NLUData, has_cjk

AUTO_ENCODER = "auto"
# Share of Chinese training examples from which the multilingual encoder is chosen (bench/RESULTS.md).
_CHINESE_SHARE_FOR_MULTILINGUAL = 0.05
_RANKING_SIZE = 10


def choose_encoder(nlu: NLUData, spec: str = AUTO_ENCODER) -> str:
    """Resolve ``auto``: multilingual e5 when the data holds Chinese, else the fast English MiniLM."""
    if spec != AUTO_ENCODER:
        return spec
    if not nlu.examples:
        return "minilm-int8"
    chinese = sum(has_cjk(e.text) for e in nlu.examples) / len(nlu.examples)
    return "e5-small" if chinese >= _CHINESE_SHARE_FOR_MULTILINGUAL else "minilm-int8"


def limit_blas_threads() -> None:
    """Run BLAS single-threaded in this process.

    A parse multiplies small matrices; with OpenBLAS threads spinning beside the encoder's
    own OpenMP threads on 2 cores, one parse took twice as long (bench/RESULTS.md).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class BatonNLU:
    """Implements :class:`bot.nlu.types.NLUEngine`. Create with :meth:`train` or :meth:`load`."""

    def __init__(
        self,
        classifier: IntentClassifier,
        extractor: EntityExtractor,
        meta: dict,
        shortcut: LexicalShortcut | None = None,
    ) -> None:
        limit_blas_threads()
        self.classifier = classifier
        self.extractor = extractor
        self.meta = meta
        self.shortcut = shortcut

    @property
    def threshold(self) -> float:
        """Confidence below which a message is ``nlu_fallback``."""
        return self.classifier.calibration.threshold

    @classmethod
    def train(
        cls,
        nlu: NLUData,
        encoder: str | Encoder | None = AUTO_ENCODER,
        threshold: float | None = None,
        kb_fingerprint: str | None = None,
        dense: np.ndarray | None = None,
    ) -> BatonNLU:
        """Train on the examples of ``nlu``; ``encoder`` is a spec (see ``ENCODERS``), an encoder or None;
        ``dense`` holds the examples' embeddings if the caller already has them (in example order)."""
        started = time.perf_counter()
        if isinstance(encoder, str):
            encoder = get_encoder(choose_encoder(nlu, encoder))
        texts = [e.text for e in nlu.examples]
        labels = [e.intent for e in nlu.examples]
        classifier = IntentClassifier.train(texts, labels, encoder, threshold=threshold, dense=dense)
        shortcut = None
        if encoder is not None:  # without an encoder the full model is as cheap as the shortcut
            shortcut = LexicalShortcut.train(classifier.featurizer.sparse_blocks(texts), labels)
        extractor = EntityExtractor(nlu)
        meta = {
            "encoder_id": encoder.id if encoder else None,
            "dim": encoder.dim if encoder else 0,
            "kb_fingerprint": kb_fingerprint,
            "intents": classifier.classes,
            "examples": len(texts),
            "calibration": asdict(classifier.calibration),
            "shortcut": None
            if shortcut is None
            else {"min_confidence": shortcut.min_confidence, "min_overlap": shortcut.min_overlap},
            "train_seconds": round(time.perf_counter() - started, 3),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        return cls(classifier, extractor, meta, shortcut)

    def warm_up(self) -> None:
        """Load the encoder and spaCy and run one parse, so the first customer waits for nothing."""
        self.extractor.warm_up()
        self.parse("hello 你好")

    def parse(self, text: str) -> ParseResult:
        """Understand one message."""
        return self.parse_batch([text])[0]

    def parse_batch(self, texts: Sequence[str]) -> list[ParseResult]:
        """Understand several messages at once (one encoder call for those the shortcut cannot answer)."""
        if not texts:
            return []
        blocks = self.classifier.featurizer.sparse_blocks(texts)
        results: list[ParseResult | None] = [None] * len(texts)
        full = np.arange(len(texts))
        if self.shortcut is not None:
            probs, usable = self.shortcut.predict(blocks)
            for i in np.flatnonzero(usable):
                results[i] = self._result(texts[i], probs[i], None)
            full = np.flatnonzero(~usable)
        if len(full):
            rest = [texts[i] for i in full]
            dense = self.classifier.featurizer.embed(rest)
            features = self.classifier.featurizer.combine([b[full] for b in blocks], dense, rest)
            probs = self.classifier.probabilities(features)
            similarity = self.classifier.similarity(dense)
            for row, i in enumerate(full):
                results[i] = self._result(
                    texts[i], probs[row], None if similarity is None else similarity[row]
                )
        return results  # type: ignore[return-value]  # every row is filled above

    def _result(self, text: str, probs: np.ndarray, similarity: float | None) -> ParseResult:
        order = np.argsort(-probs)[:_RANKING_SIZE]
        ranking = tuple(IntentScore(self.classifier.classes[i], float(probs[i])) for i in order)
        top = ranking[0]
        floor = self.classifier.calibration.min_similarity
        novel = similarity is not None and floor is not None and similarity < floor
        confident = top.confidence >= self.threshold and not novel
        intent = top if confident else IntentScore(FALLBACK, self.threshold)
        guess = detect_language(text)
        entities = tuple(self.extractor.extract(text))
        return ParseResult(text, guess.language, intent, ranking, entities, guess.mixed)

    def save(self, folder: Path) -> None:
        """Write the model into ``folder`` (created if needed)."""
        folder.mkdir(parents=True, exist_ok=True)
        parts = {"classifier": self.classifier, "extractor": self.extractor, "shortcut": self.shortcut}
        joblib.dump(parts, folder / "nlu.joblib")
        (folder / "nlu.json").write_text(
            json.dumps(self.meta, indent=2, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path, encoder: Encoder | None = None) -> BatonNLU:
        """Load a model saved by :meth:`save`, with the encoder it was trained with.

        Raises:
            IndexMismatchError: ``encoder`` is not the one the model was trained with.
        """
        meta = json.loads((folder / "nlu.json").read_text(encoding="utf-8"))
        if encoder is None and meta["encoder_id"]:
            encoder = encoder_for_id(meta["encoder_id"])
        if encoder is not None:
            encoder.warm_up()
        if (encoder.id if encoder else None) != meta["encoder_id"] or (
            encoder and encoder.dim != meta["dim"]
        ):
            raise IndexMismatchError(
                f"model {folder} was trained with {meta['encoder_id']}, not {encoder.id if encoder else None}"
            )
        parts = joblib.load(folder / "nlu.joblib")
        classifier: IntentClassifier = parts["classifier"]
        classifier.featurizer.encoder = encoder
        return cls(classifier, parts["extractor"], meta, parts.get("shortcut"))


def encoder_for_id(encoder_id: str) -> Encoder:
    """The encoder whose ``id`` is ``encoder_id`` (models remember ids, not specs)."""
    for spec in ("minilm-int8", "e5-small", "minilm"):
        encoder = get_encoder(spec)
        if encoder.id == encoder_id:
            return encoder
    prefix = "sentence-transformers:"
    if encoder_id.startswith(prefix):
        return get_encoder("st:" + encoder_id[len(prefix) :])
    raise IndexMismatchError(f"no encoder available for id {encoder_id!r}")
