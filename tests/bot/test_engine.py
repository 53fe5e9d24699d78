"""Baton's NLU engine on the tiny bilingual knowledge base: real encoder, real training."""

from __future__ import annotations

import numpy as np
import pytest

from bot.nlu.classifier import fit_temperature, softmax
from bot.nlu.engine import BatonNLU, choose_encoder
from bot.nlu.types import NLUEngine
from knowledge_index.encoders import get_encoder
from knowledge_index.errors import IndexMismatchError
from knowledge_index.model import FALLBACK, Example, NLUData


@pytest.mark.parametrize(
    ("text", "intent", "language"),
    [
        ("hi, good evening", "greet", "en"),
        ("晚上好", "greet", "zh"),
        ("I'd like to speak with a human agent", "human_handoff", "en"),
        ("给我转人工客服", "human_handoff", "zh"),
        ("when do I get my refund", "faq/refund_time", "en"),
        ("退款几天能到", "faq/refund_time", "zh"),
        ("is shipping free?", "faq/shipping_cost", "en"),
        ("需要付运费吗", "faq/shipping_cost", "zh"),
        ("my parcel LM2024051234 hasn't come", "order_status", "en"),
    ],
)
def test_understands_unseen_paraphrases(tiny_nlu, text, intent, language):
    result = tiny_nlu.parse(text)
    assert result.intent.name == intent
    assert result.language == language
    assert result.ranking[0].name == intent


def test_engine_meets_the_protocol(tiny_nlu):
    assert isinstance(tiny_nlu, NLUEngine)


def test_out_of_scope_is_caught(tiny_nlu):
    for text in ("what's the capital of Peru", "帮我算一下微积分"):
        assert tiny_nlu.parse(text).intent.name in {"out_of_scope", FALLBACK}


def test_confidences_are_probabilities(tiny_nlu):
    result = tiny_nlu.parse("how much does delivery cost")
    scores = [s.confidence for s in result.ranking]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[0] <= 1
    probs = tiny_nlu.classifier.predict_proba(["how much does delivery cost"])
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_fallback_below_threshold(tiny_kb, tiny_nlu):
    text = "shipping price, or is it included?"
    confidence = tiny_nlu.parse(text).ranking[0].confidence
    assert confidence < 1.0
    threshold = (confidence + 1.0) / 2  # training is deterministic: the same text scores the same
    strict = BatonNLU.train(tiny_kb.nlu, "e5-small", threshold=threshold)
    result = strict.parse(text)
    assert result.intent.name == FALLBACK
    assert result.intent.confidence == threshold
    assert result.ranking[0].name == "faq/shipping_cost"  # the guess is still there for "did you mean"


def test_entities_come_with_the_parse(tiny_nlu):
    result = tiny_nlu.parse("where is LM2024051234")
    assert result.entity_values("order_number") == ["LM2024051234"]


def test_save_and_load_round_trip(tiny_nlu, tmp_path):
    tiny_nlu.save(tmp_path / "nlu")
    loaded = BatonNLU.load(tmp_path / "nlu")
    texts = ["退款多久", "hello", "where is my package"]
    np.testing.assert_allclose(
        loaded.classifier.predict_proba(texts), tiny_nlu.classifier.predict_proba(texts), atol=1e-5
    )
    assert [r.intent.name for r in loaded.parse_batch(texts)] == [
        r.intent.name for r in tiny_nlu.parse_batch(texts)
    ]


def test_load_with_another_encoder_is_refused(tiny_nlu, tmp_path):
    tiny_nlu.save(tmp_path / "nlu")
    with pytest.raises(IndexMismatchError):
        BatonNLU.load(tmp_path / "nlu", get_encoder("minilm-int8"))


def test_encoder_choice_follows_the_language_of_the_data():
    english = NLUData([Example("hello", "greet"), Example("bye", "goodbye")])
    mixed = NLUData([Example("hello", "greet"), Example("再见", "goodbye")])
    assert choose_encoder(english) == "minilm-int8"
    assert choose_encoder(mixed) == "e5-small"
    assert choose_encoder(mixed, "minilm") == "minilm"


def test_needs_two_intents():
    with pytest.raises(ValueError, match="at least two intents"):
        BatonNLU.train(NLUData([Example("hello", "greet"), Example("hi", "greet")]), None)


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4000, 5))
    probs = softmax(scores, 3.0)
    truth = np.array([rng.choice(5, p=p) for p in probs])
    assert fit_temperature(scores, truth) == pytest.approx(3.0, rel=0.15)


def test_two_intents_without_an_encoder():
    greet = ["hello", "hi there", "good morning", "hey you", "你好", "早上好"]
    bye = ["bye", "see you later", "goodbye for now", "farewell", "再见", "拜拜"]
    data = NLUData([Example(t, "greet") for t in greet] + [Example(t, "goodbye") for t in bye])
    engine = BatonNLU.train(data, None)
    assert engine.classifier.calibration.heldout_accuracy is not None  # calibrated on a held-out split
    assert engine.parse("hello again").ranking[0].name == "greet"
    assert engine.parse("拜拜啦").ranking[0].name == "goodbye"
