"""A knowledge base's trained parts (NLU model and vector index), published and loaded as one version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bot.nlu.engine import AUTO_ENCODER, BatonNLU, choose_encoder
from knowledge_index.encoders import get_encoder
from knowledge_index.index import VectorIndex
from knowledge_index.model import KnowledgeBase
from knowledge_index.versions import VersionStore

# Bumped when what training produces changes, so older versions are retrained, not half-used.
# 2: the NLU model carries its lexical shortcut.
MODEL_FORMAT = 2


@dataclass
class TrainedBot:
    """What the bot answers with: the knowledge base, its NLU engine and its index."""

    kb: KnowledgeBase
    nlu: BatonNLU
    index: VectorIndex
    path: Path


def model_root(model_dir: Path, kb: KnowledgeBase) -> Path:
    """Where the versions of ``kb``'s models live: one folder per knowledge-base folder name."""
    return Path(model_dir) / kb.root.resolve().name


def train_bot(
    kb: KnowledgeBase, model_dir: Path, encoder: str = AUTO_ENCODER, threshold: float | None = None
) -> TrainedBot:
    """Train the NLU model and build the index for ``kb``, then publish both as the current version."""
    spec = choose_encoder(kb.nlu, encoder)
    model = get_encoder(spec)
    texts = [e.text for e in kb.nlu.examples]
    vectors = model.encode(texts)  # once, for the classifier and for the index's FAQ examples
    nlu = BatonNLU.train(kb.nlu, model, threshold=threshold, kb_fingerprint=kb.fingerprint, dense=vectors)
    index = VectorIndex.build(kb, model, known=dict(zip(texts, vectors, strict=True)))

    def write(folder: Path) -> None:
        nlu.save(folder / "nlu")
        index.save(folder / "index")
        (folder / "version.json").write_text(
            json.dumps(
                {
                    "kb": str(kb.root),
                    "kb_fingerprint": kb.fingerprint,
                    "encoder": spec,
                    "format": MODEL_FORMAT,
                },
                indent=2,
            ),
            encoding="utf-8",
        )

    path = VersionStore(model_root(model_dir, kb)).publish(write)
    return TrainedBot(kb, nlu, index, path)


def load_bot(kb: KnowledgeBase, model_dir: Path) -> TrainedBot | None:
    """The current trained version for ``kb``, or None if there is none, it was trained on other
    content, or by an older Baton (`MODEL_FORMAT`)."""
    path = VersionStore(model_root(model_dir, kb)).current()
    if path is None:
        return None
    info = json.loads((path / "version.json").read_text(encoding="utf-8"))
    if info.get("kb_fingerprint") != kb.fingerprint or info.get("format") != MODEL_FORMAT:
        return None
    nlu = BatonNLU.load(path / "nlu")
    index = VectorIndex.load(path / "index", nlu.classifier.featurizer.encoder)
    return TrainedBot(kb, nlu, index, path)
