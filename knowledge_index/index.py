"""A FAISS index over FAQ examples and article chunks, persisted with a manifest.

Saved versions are managed by :mod:`knowledge_index.versions`; a running process
swaps the index it answers from with :class:`ServedIndex`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from knowledge_index.articles import chunk_article
from knowledge_index.encoders import Encoder
from knowledge_index.errors import IndexMismatchError
from knowledge_index.model import KnowledgeBase, has_cjk

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Entry:
    """What one vector stands for: an FAQ example (``intent``) or an article passage (``article_id``)."""

    kind: str  # "example" | "article"
    text: str
    language: str
    intent: str | None = None
    article_id: str | None = None
    title: str | None = None
    section: str | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: the entry and its cosine similarity to the query."""

    entry: Entry
    score: float


@dataclass(frozen=True)
class Manifest:
    """Describes an index version; ``encoder_id`` and ``dim`` must match the encoder that queries it."""

    encoder_id: str
    dim: int
    kb_fingerprint: str
    created_at: str
    size: int
    version: str


def kb_entries(kb: KnowledgeBase) -> list[Entry]:
    """The entries of a knowledge base: every FAQ example and every article chunk."""
    entries = [
        Entry("example", e.text, "zh" if has_cjk(e.text) else "en", intent=e.intent)
        for e in kb.nlu.examples
        if e.intent.startswith("faq/")
    ]
    for article in kb.articles:
        for chunk in chunk_article(article):
            entries.append(
                Entry(
                    "article",
                    chunk.text,
                    chunk.language,
                    article_id=chunk.article_id,
                    title=chunk.title,
                    section=chunk.section,
                )
            )
    return entries


def _encode_text(entry: Entry) -> str:
    # An article passage is encoded with its title and section so a short passage keeps its topic.
    if entry.kind == "article":
        return f"{entry.title} - {entry.section}\n{entry.text}"
    return entry.text


class VectorIndex:
    """Vectors and the entries they stand for; search by cosine similarity."""

    def __init__(self, manifest: Manifest, entries: list[Entry], index: faiss.Index) -> None:
        self.manifest = manifest
        self.entries = entries
        self._index = index

    @classmethod
    def build(
        cls, kb: KnowledgeBase, encoder: Encoder, known: Mapping[str, np.ndarray] | None = None
    ) -> VectorIndex:
        """Encode every entry of ``kb`` with ``encoder``; ``known`` maps example texts to query vectors
        the caller already computed with the same encoder (training did), so they are not encoded twice."""
        entries = kb_entries(kb)
        encoder.warm_up()
        known = known or {}
        vectors = np.zeros((len(entries), encoder.dim), dtype=np.float32)
        todo: dict[str, list[int]] = {"query": [], "passage": []}
        for i, entry in enumerate(entries):
            if entry.kind == "example" and entry.text in known:
                vectors[i] = known[entry.text]
            else:
                todo["query" if entry.kind == "example" else "passage"].append(i)
        for enc_kind, rows in todo.items():
            if rows:
                vectors[rows] = encoder.encode([_encode_text(entries[i]) for i in rows], kind=enc_kind)
        index = faiss.IndexFlatIP(encoder.dim)
        index.add(vectors)
        manifest = Manifest(
            encoder_id=encoder.id,
            dim=encoder.dim,
            kb_fingerprint=kb.fingerprint,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
            size=len(entries),
            version=f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}",
        )
        return cls(manifest, entries, index)

    def search(self, query: np.ndarray, k: int = 5, kind: str | None = None) -> list[Hit]:
        """The ``k`` nearest entries to a unit query vector, optionally of one kind only."""
        if not self.entries:
            return []
        fetch = min(len(self.entries), k if kind is None else max(k * 4, 32))
        scores, ids = self._index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), fetch)
        hits = [
            Hit(self.entries[i], float(s))
            for s, i in zip(scores[0], ids[0], strict=True)
            if i >= 0 and (kind is None or self.entries[i].kind == kind)
        ]
        return hits[:k]

    def save(self, folder: Path) -> None:
        """Write the index, its entries and its manifest into ``folder`` (which must not exist)."""
        folder.mkdir(parents=True)
        faiss.write_index(self._index, str(folder / "index.faiss"))
        with open(folder / "entries.jsonl", "w", encoding="utf-8") as f:
            for entry in self.entries:
                f.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
        # The manifest goes last: a folder without one is an unfinished build.
        (folder / MANIFEST).write_text(json.dumps(asdict(self.manifest), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, encoder: Encoder) -> VectorIndex:
        """Load a saved index for querying with ``encoder``.

        Raises:
            IndexMismatchError: the index was built with another encoder or dimension.
            FileNotFoundError: ``folder`` holds no finished index.
        """
        manifest = Manifest(**json.loads((folder / MANIFEST).read_text(encoding="utf-8")))
        encoder.warm_up()
        if manifest.encoder_id != encoder.id or manifest.dim != encoder.dim:
            raise IndexMismatchError(
                f"index {folder} was built with {manifest.encoder_id} ({manifest.dim}-d); "
                f"refusing to query it with {encoder.id} ({encoder.dim}-d): rebuild it with `baton train`"
            )
        index = faiss.read_index(str(folder / "index.faiss"))
        with open(folder / "entries.jsonl", encoding="utf-8") as f:
            entries = [Entry(**json.loads(line)) for line in f]
        if index.ntotal != len(entries) or len(entries) != manifest.size:
            raise ValueError(
                f"index {folder} is inconsistent: {index.ntotal} vectors, {len(entries)} entries"
            )
        return cls(manifest, entries, index)
