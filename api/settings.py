"""Baton's settings: one class, read from ``BATON_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting Baton reads. Command-line flags override them for one run."""

    model_config = SettingsConfigDict(env_prefix="BATON_", env_file=".env", extra="ignore")

    kb: Path = Field(Path("nlu_data"), description="knowledge-base folder the bot answers from")
    model_dir: Path = Field(Path("var/models"), description="where trained models and indexes are kept")
    encoder: str = Field(
        "auto",
        description="sentence encoder: auto, minilm, minilm-int8, e5-small or st:<model name or path>",
    )
    fallback_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="confidence below which a message is nlu_fallback (empty: chosen in training)",
    )
    kb_max_file_bytes: int = Field(10 * 1024 * 1024, gt=0, description="largest knowledge-base file accepted")
