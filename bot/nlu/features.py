"""Features for intent classification: character n-grams, words, and a sentence embedding.

Character n-grams carry short Chinese queries and typos; words (jieba for Chinese)
carry English phrasing; the dense embedding carries paraphrases. Each block is
L2-normalised, then weighted, so no block drowns the others.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from knowledge_index.encoders import Encoder
from knowledge_index.model import has_cjk

_WORD = re.compile(r"\w+")


def normalise_text(text: str) -> str:
    """NFKC (full-width to half-width), lower case, collapsed spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def tokenize(text: str) -> list[str]:
    """Words of ``text``: jieba segmentation where there is Chinese, else word characters."""
    if has_cjk(text):
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return [t for t in jieba.lcut(text) if _WORD.search(t)]
    return _WORD.findall(text)


class TextFeaturizer:
    """Fits the sparse vocabularies on training texts and turns texts into one feature matrix."""

    def __init__(self, encoder: Encoder | None, dense_weight: float = 1.5, word_weight: float = 1.0) -> None:
        self.encoder = encoder
        self.dense_weight = dense_weight
        self.word_weight = word_weight
        self.chars = TfidfVectorizer(
            analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, dtype=np.float32
        )
        self.words = TfidfVectorizer(
            analyzer="word",
            tokenizer=tokenize,
            token_pattern=None,
            lowercase=False,
            ngram_range=(1, 2),
            sublinear_tf=True,
            dtype=np.float32,
        )

    def __getstate__(self) -> dict:
        # The encoder is a process-wide model, not part of the saved state; load() reattaches it.
        state = self.__dict__.copy()
        state["encoder"] = None
        state.pop("_analyzers", None)
        return state

    def fit_transform(self, texts: Sequence[str], dense: np.ndarray | None = None) -> sparse.csr_matrix:
        """Fit the vocabularies on ``texts`` and return their features (``dense`` reuses embeddings)."""
        norm = [normalise_text(t) for t in texts]
        blocks = [self.chars.fit_transform(norm), self.words.fit_transform(norm) * self.word_weight]
        return self._stack(blocks, texts, dense)

    def transform(self, texts: Sequence[str], dense: np.ndarray | None = None) -> sparse.csr_matrix:
        """Features of ``texts`` with the fitted vocabularies (equal to sklearn's ``transform``)."""
        return self.combine(self.sparse_blocks(texts), dense, texts)

    def sparse_blocks(self, texts: Sequence[str]) -> list[sparse.csr_matrix]:
        """The character and word TF-IDF blocks of ``texts`` (cheap: no encoder)."""
        norm = [normalise_text(t) for t in texts]
        if not hasattr(self, "_analyzers"):
            self._analyzers = (self.chars.build_analyzer(), self.words.build_analyzer())
        return [
            _tfidf(self.chars, self._analyzers[0], norm),
            _tfidf(self.words, self._analyzers[1], norm) * self.word_weight,
        ]

    def combine(
        self, blocks: list[sparse.csr_matrix], dense: np.ndarray | None, texts: Sequence[str]
    ) -> sparse.csr_matrix:
        """The whole feature matrix from `sparse_blocks` and the embeddings (computed if None)."""
        return self._stack(list(blocks), texts, dense)

    def embed(self, texts: Sequence[str]) -> np.ndarray | None:
        """The dense block for ``texts`` (None without an encoder)."""
        if self.encoder is None:
            return None
        return self.encoder.encode(list(texts), kind="query")

    def _stack(self, blocks: list, texts: Sequence[str], dense: np.ndarray | None) -> sparse.csr_matrix:
        if self.encoder is not None:
            vectors = self.embed(texts) if dense is None else dense
            blocks.insert(0, sparse.csr_matrix(vectors * self.dense_weight))
        return sparse.hstack(blocks, format="csr", dtype=np.float32)


def _tfidf(vectorizer: TfidfVectorizer, analyzer: Callable, texts: list[str]) -> sparse.csr_matrix:
    """``vectorizer.transform(texts)`` for a fitted sublinear, L2-normalised TF-IDF, without sklearn's
    per-call input validation, which cost more than the arithmetic for one short message."""
    vocabulary, idf = vectorizer.vocabulary_, vectorizer.idf_
    indptr, indices, values = [0], [], []
    for text in texts:
        counts = Counter(vocabulary[g] for g in analyzer(text) if g in vocabulary)
        cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        row = (1.0 + np.log(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))) * idf[cols]
        norm = np.sqrt(row @ row)
        indices.append(cols)
        values.append(row / norm if norm > 0 else row)
        indptr.append(indptr[-1] + len(cols))
    return sparse.csr_matrix(
        (
            np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.int64),
            np.array(indptr),
        ),
        shape=(len(texts), len(vocabulary)),
    )
