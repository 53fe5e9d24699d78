"""Fixtures for the dialogue tests: real indexes, the default knowledge base trained once, demo orders."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import DEFAULT_KB


@pytest.fixture(scope="session")
def tiny_index(tiny_kb, tiny_nlu):
    """The vector index of the tiny knowledge base, with the encoder of ``tiny_nlu``."""
    from knowledge_index.index import VectorIndex

    return VectorIndex.build(tiny_kb, tiny_nlu.classifier.featurizer.encoder)


@pytest.fixture(scope="session")
def lumo():
    """The default knowledge base (nlu_data) with its NLU and index, trained once per session (~20 s)."""
    from bot.nlu.engine import BatonNLU
    from knowledge_index.index import VectorIndex
    from knowledge_index.loader import load_kb

    kb = load_kb(DEFAULT_KB)
    nlu = BatonNLU.train(kb.nlu, "e5-small", kb_fingerprint=kb.fingerprint)
    return kb, nlu, VectorIndex.build(kb, nlu.classifier.featurizer.encoder)


@pytest.fixture
def seeded_orders(redis_url) -> str:
    """The session's Redis, emptied, with the demo orders seeded; returns its URL."""
    from bot.orders import DemoOrderConnector

    async def seed() -> None:
        async with DemoOrderConnector.from_url(redis_url) as connector:
            await connector.seed()

    asyncio.run(seed())
    return redis_url
