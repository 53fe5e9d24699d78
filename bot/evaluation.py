"""Train on one Rasa NLU file, predict another, and score it (``baton evaluate``)."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import f1_score

from bot.nlu.engine import AUTO_ENCODER, BatonNLU, choose_encoder
from knowledge_index.model import FALLBACK, OUT_OF_SCOPE, NLUData

# The keys `baton evaluate --json` prints (DESIGN.md), in order.
METRICS = (
    "accuracy",
    "in_scope_accuracy",
    "oos_recall",
    "oos_precision",
    "macro_f1",
    "train_seconds",
    "predict_ms_p50",
)
_LATENCY_SAMPLE = 300
_WARMUP_QUERIES = 5


@dataclass
class EvaluationReport:
    """The metrics of DESIGN.md plus details for people (``details`` is not part of the JSON contract)."""

    metrics: dict[str, float | None]
    details: dict = field(default_factory=dict)


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def score(truth: list[str], predicted: list[str]) -> dict[str, float | None]:
    """Accuracy-type metrics; an ``out_of_scope`` example is caught by ``out_of_scope`` or ``nlu_fallback``."""
    caught = [p in (OUT_OF_SCOPE, FALLBACK) for p in predicted]
    is_oos = [t == OUT_OF_SCOPE for t in truth]
    correct = [c if o else p == t for t, p, c, o in zip(truth, predicted, caught, is_oos, strict=True)]
    in_scope = [ok for ok, o in zip(correct, is_oos, strict=True) if not o]
    folded = [OUT_OF_SCOPE if p == FALLBACK else p for p in predicted]
    labels = sorted(set(truth))
    return {
        "accuracy": _ratio(sum(correct), len(correct)),
        "in_scope_accuracy": _ratio(sum(in_scope), len(in_scope)),
        "oos_recall": _ratio(sum(c for c, o in zip(caught, is_oos, strict=True) if o), sum(is_oos)),
        "oos_precision": _ratio(sum(o for c, o in zip(caught, is_oos, strict=True) if c), sum(caught)),
        "macro_f1": round(float(f1_score(truth, folded, labels=labels, average="macro", zero_division=0)), 4),
    }


def evaluate(
    train: NLUData, test: NLUData, encoder: str = AUTO_ENCODER, threshold: float | None = None
) -> EvaluationReport:
    """Train Baton's engine on ``train`` and score it on ``test``.

    Raises:
        ValueError: ``test`` has no examples.
    """
    if not test.examples:
        raise ValueError("the test file has no examples")
    spec = choose_encoder(train, encoder)
    started = time.perf_counter()
    engine = BatonNLU.train(train, spec, threshold=threshold)
    train_seconds = time.perf_counter() - started

    texts = [e.text for e in test.examples]
    truth = [e.intent for e in test.examples]
    results = engine.parse_batch(texts)
    predicted = [r.intent.name for r in results]
    metrics = score(truth, predicted)

    # Latency as a customer meets it: one message at a time, warm.
    sample = texts[:: max(1, len(texts) // _LATENCY_SAMPLE)][:_LATENCY_SAMPLE]
    for text in sample[:_WARMUP_QUERIES]:
        engine.parse(text)
    timings = []
    for text in sample:
        t0 = time.perf_counter()
        engine.parse(text)
        timings.append((time.perf_counter() - t0) * 1000)
    metrics["train_seconds"] = round(train_seconds, 2)
    metrics["predict_ms_p50"] = round(float(np.percentile(timings, 50)), 2)

    # What the scores would be with no fallback threshold: how much in-scope accuracy the threshold costs.
    top_guess = [r.ranking[0].name for r in results]
    errors = Counter((t, p) for t, p in zip(truth, predicted, strict=True) if t != p)
    details = {
        "encoder": spec,
        "threshold": round(engine.threshold, 4),
        "temperature": round(engine.classifier.calibration.temperature, 3),
        "train_examples": len(train.examples),
        "test_examples": len(texts),
        "predict_ms_p99": round(float(np.percentile(timings, 99)), 2),
        "without_threshold": score(truth, top_guess),
        "top_confusions": [{"truth": t, "predicted": p, "count": n} for (t, p), n in errors.most_common(15)],
    }
    return EvaluationReport({key: metrics[key] for key in METRICS}, details)
