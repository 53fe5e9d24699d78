"""Publishing and loading a trained knowledge base: a version is used only if it fits the content and format."""

from __future__ import annotations

import json

from bot.trained import MODEL_FORMAT, load_bot, train_bot
from knowledge_index.loader import load_kb


def test_a_trained_version_is_loaded_only_for_the_same_content_and_format(kb_copy, tmp_path):
    models = tmp_path / "models"
    kb = load_kb(kb_copy)
    trained = train_bot(kb, models, encoder="e5-small")
    loaded = load_bot(kb, models)
    assert loaded is not None and loaded.path == trained.path
    assert loaded.nlu.parse("运费多少").intent.name == trained.nlu.parse("运费多少").intent.name

    info_path = trained.path / "version.json"
    info = json.loads(info_path.read_text(encoding="utf-8"))
    assert info["format"] == MODEL_FORMAT
    info_path.write_text(json.dumps({**info, "format": MODEL_FORMAT - 1}), encoding="utf-8")
    assert load_bot(kb, models) is None  # trained by an older Baton: retrain, do not half-use it
    info_path.write_text(json.dumps(info), encoding="utf-8")

    (kb_copy / "nlu.yml").write_text(
        (kb_copy / "nlu.yml").read_text(encoding="utf-8").replace("- 运费多少", "- 运费是多少"),
        encoding="utf-8",
    )
    assert load_bot(load_kb(kb_copy), models) is None  # the content changed
