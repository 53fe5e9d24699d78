"""The lexical shortcut: n-grams alone answer what plainly resembles a training example, nothing else."""

from __future__ import annotations

import re

import numpy as np
import yaml

from bot.nlu.engine import BatonNLU
from bot.nlu.shortcut import PRECISION, _confidence_bar
from tests.conftest import ROOT

DEV_SETS = [ROOT / "bench" / "data" / name for name in ("zh_dev.yml", "en_dev.yml", "oos_test.yml")]


def held_out(label: str | None = None) -> list[str]:
    """Messages of the held-out development sets (of one intent, or all), entity marks removed."""
    texts = []
    for path in DEV_SETS:
        for block in yaml.safe_load(path.read_text(encoding="utf-8"))["nlu"]:
            if label is None or block["intent"] == label:
                lines = [line[2:] for line in block["examples"].splitlines() if line.startswith("- ")]
                texts += [re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", line) for line in lines]
    return texts


def test_the_bar_is_the_lowest_confidence_that_keeps_the_precision():
    confidence = np.linspace(1.0, 0.01, 1000)
    correct = np.ones(1000, dtype=bool)
    correct[[300, 700, 701, 702, 703, 704]] = False  # one early slip, then a run of mistakes
    bar = _confidence_bar(confidence, correct)
    kept = confidence >= bar
    assert correct[kept].mean() >= PRECISION
    lower = confidence[confidence < bar].max()
    assert correct[confidence >= lower].mean() < PRECISION  # and no lower bar would keep it
    assert confidence[300] > bar > confidence[710]  # the lone slip is allowed, the run of mistakes is not
    assert _confidence_bar(np.array([0.9, 0.8]), np.array([False, True])) is None


def test_tiny_data_gets_no_shortcut(tiny_nlu):
    assert tiny_nlu.shortcut is None  # 12 held-out examples say nothing about a 0.5 % error rate


def test_on_the_default_kb_the_shortcut_agrees_with_the_full_model(lumo):
    _kb, nlu, _index = lumo
    shortcut = nlu.shortcut
    assert shortcut is not None and shortcut.min_confidence >= nlu.threshold
    texts = held_out()
    blocks = nlu.classifier.featurizer.sparse_blocks(texts)
    probs, usable = shortcut.predict(blocks)
    assert 0.3 < usable.mean() < 1.0  # it takes a real share of the traffic, not all of it
    dense = nlu.classifier.featurizer.embed(texts)
    full = nlu.classifier.probabilities(nlu.classifier.featurizer.combine(blocks, dense, texts))
    agree = probs[usable].argmax(axis=1) == full[usable].argmax(axis=1)
    assert agree.mean() >= 0.99


def test_the_shortcut_never_answers_an_unfamiliar_topic_the_full_model_would_catch(lumo):
    _kb, nlu, _index = lumo
    texts = [
        *held_out("out_of_scope"),
        "what's the capital of Mongolia",
        "帮我算一下微积分",
        "who painted the Mona Lisa",
    ]
    _probs, usable = nlu.shortcut.predict(nlu.classifier.featurizer.sparse_blocks(texts))
    assert usable.mean() <= 0.05  # a few off-topic messages look like FAQ wording ("招商银行几点下班")...
    full_model = BatonNLU(nlu.classifier, nlu.extractor, nlu.meta, shortcut=None)
    caught = {"out_of_scope", "nlu_fallback"}
    with_shortcut = [r.intent.name for r in nlu.parse_batch(texts)]
    without = [r.intent.name for r in full_model.parse_batch(texts)]
    # ...but each of those is one the full model answers wrongly too: no catch is lost.
    assert [
        t for t, a, b in zip(texts, with_shortcut, without, strict=True) if b in caught and a not in caught
    ] == []


def test_a_knowledge_managers_own_wording_takes_the_shortcut(lumo):
    kb, nlu, _index = lumo
    example = next(e.text for e in kb.nlu.examples if e.intent == "faq/shipping_cost")
    _probs, usable = nlu.shortcut.predict(nlu.classifier.featurizer.sparse_blocks([example]))
    assert usable[0]
    result = nlu.parse(example)
    assert (
        result.intent.name == "faq/shipping_cost" and result.intent.confidence >= nlu.shortcut.min_confidence
    )
