"""Scoring rules of `baton evaluate` (DESIGN.md), on hand-computed cases."""

from __future__ import annotations

import pytest

from bot.evaluation import METRICS, evaluate, score
from knowledge_index.model import NLUData


def test_score_counts_fallback_as_caught_out_of_scope():
    truth = ["a", "a", "b", "out_of_scope", "out_of_scope", "b"]
    predicted = ["a", "b", "b", "nlu_fallback", "a", "nlu_fallback"]
    metrics = score(truth, predicted)
    assert metrics["accuracy"] == pytest.approx(3 / 6, abs=1e-4)  # a, b, and the caught out_of_scope
    assert metrics["in_scope_accuracy"] == pytest.approx(2 / 4, abs=1e-4)
    assert metrics["oos_recall"] == pytest.approx(1 / 2, abs=1e-4)
    assert metrics["oos_precision"] == pytest.approx(
        1 / 2, abs=1e-4
    )  # one of two fallbacks was really out of scope
    # nlu_fallback folds into out_of_scope; each label then has 1 TP, 1 FP, 1 FN: F1 1/2 each
    assert metrics["macro_f1"] == pytest.approx(0.5, abs=1e-4)


def test_score_without_out_of_scope_examples():
    metrics = score(["a", "b"], ["a", "a"])
    assert metrics["oos_recall"] is None
    assert metrics["oos_precision"] is None
    assert metrics["accuracy"] == metrics["in_scope_accuracy"] == 0.5


def test_evaluate_reports_exactly_the_design_metrics(tiny_kb):
    test = NLUData([e for e in tiny_kb.nlu.examples if e.intent != "order_status"][::3])
    report = evaluate(tiny_kb.nlu, test)
    assert tuple(report.metrics) == METRICS
    assert report.metrics["accuracy"] > 0.9  # these are training examples
    assert report.metrics["train_seconds"] > 0 and report.metrics["predict_ms_p50"] > 0
    assert report.details["encoder"] == "e5-small"


def test_evaluate_refuses_empty_test(tiny_kb):
    with pytest.raises(ValueError, match="no examples"):
        evaluate(tiny_kb.nlu, NLUData())
