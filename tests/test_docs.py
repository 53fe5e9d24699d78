"""Every setting and every encoder name is documented for newcomers, and the architecture map names
only code that exists."""

from __future__ import annotations

import importlib
import re

from api.settings import Settings
from knowledge_index.encoders import ENCODERS
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme():
    missing = [
        f"BATON_{name.upper()}" for name in Settings.model_fields if f"BATON_{name.upper()}" not in README
    ]
    assert not missing


def test_every_encoder_is_in_the_readme():
    names = [name.split(":")[0] for name in ENCODERS]
    assert all(f"`{name}" in README for name in names)


def test_readme_shows_the_two_commands():
    assert "make run" in README and "make test" in README


ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
PACKAGES = ("api", "bot", "conversations", "handoff", "knowledge_index", "agent_assist")


def _resolves(dotted: str) -> bool:
    """True if ``dotted`` names a module, or something inside one (a class, a function, an attribute)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(target, name):
                return False
            target = getattr(target, name)
        return True
    return False


def test_every_module_and_name_the_architecture_map_gives_exists():
    pattern = r"`((?:" + "|".join(PACKAGES) + r")(?:\.\w+)+)`"
    files = ("yml", "yaml", "md", "py", "json", "jsonl", "csv")  # handoff.yml is a file, not code
    named = {name for name in re.findall(pattern, ARCHITECTURE) if name.rsplit(".", 1)[1] not in files}
    assert len(named) > 30  # the map names the code it describes
    assert sorted(name for name in named if not _resolves(name)) == []


def test_every_failpoint_and_setting_of_durability_is_on_the_map():
    from conversations.failpoints import POINTS

    assert all(f"`{point}`" in ARCHITECTURE for point in POINTS)
    assert "BATON_RECLAIM_SECONDS" in ARCHITECTURE and "BATON_REPLICA_NAME" in ARCHITECTURE
