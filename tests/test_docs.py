"""Every setting and every encoder name is documented for newcomers."""

from __future__ import annotations

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
