"""Baton's settings: one class, read from ``BATON_*`` environment variables (or a ``.env`` file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
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

    # -- the service (baton serve) -----------------------------------------------------------
    host: str = Field("127.0.0.1", description="address baton serve listens on")
    port: int = Field(8000, ge=1, le=65535, description="port baton serve listens on")
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("REDIS_URL", "BATON_REDIS_URL"),
        description="Redis to use (REDIS_URL also works); empty: start a private Redis under data_dir",
    )
    redis_prefix: str = Field("baton:", min_length=1, description="prefix of every Redis key Baton writes")
    data_dir: Path = Field(Path("var"), description="private Redis data, the generated secret key")
    secret_key: SecretStr | None = Field(
        None,
        description="signs visitor tokens; empty: generated once and kept in data_dir/secret_key",
    )
    visitor_token_days: float = Field(30, gt=0, description="how long a web visitor's token stays valid")
    app_key: str | None = Field(
        None, description="the mobile app's key (X-Baton-App-Key); empty: app API off"
    )
    app_secret: SecretStr | None = Field(
        None, description="shared with the app's backend, which signs user tokens with it"
    )
    max_message_chars: int = Field(4000, gt=0, description="longest customer message accepted")
    rate_limit_messages: int = Field(20, gt=0, description="messages one customer may send per window")
    rate_limit_seconds: float = Field(10, gt=0, description="the rate-limit window")
    nlu_batch_size: int = Field(16, gt=0, description="most messages the NLU worker parses in one batch")
    nlu_cache_size: int = Field(10_000, ge=0, description="parses of repeated messages kept (0: no cache)")

    # -- Rasa: a Rasa server as the NLU engine, and Rasa assistants calling Baton --------------
    nlu_engine: Literal["baton", "rasa"] = Field(
        "baton", description="who understands messages: baton (in-process) or rasa (a Rasa server)"
    )
    rasa_url: str = Field(
        "http://127.0.0.1:5005", description="the Rasa server: the NLU engine, and where handoffs resume Rasa"
    )
    rasa_token: SecretStr | None = Field(
        None, description="the Rasa server's --auth-token; empty: the one baton rasa serve keeps in data_dir"
    )
    rasa_venv: Path = Field(
        Path(".venv-rasa"), description="the Rasa venv (Python 3.10) make rasa-venv builds"
    )
    rasa_timeout_seconds: float = Field(
        1.0, gt=0, description="longest wait for Rasa's answer before Baton's engine answers instead"
    )
    rasa_retry_seconds: float = Field(
        15.0,
        ge=0,
        description="after Rasa failed, how long Baton's engine answers before Rasa is tried again",
    )
    rasa_actions_token: SecretStr | None = Field(
        None, description="the token Rasa's action server sends to /api/v1/rasa; empty: that API is off"
    )

    # -- the WeChat Official Account channel (on when the token is set) ------------------------
    wechat_token: SecretStr | None = Field(
        None, description="the Token of the account's server settings; empty: WeChat channel off"
    )
    wechat_app_id: str | None = Field(None, description="the account's AppID")
    wechat_app_secret: SecretStr | None = Field(
        None, description="the account's AppSecret, for the customer-service message API"
    )
    wechat_aes_key: SecretStr | None = Field(
        None, description="the EncodingAESKey (43 characters); set: safe mode, replies encrypted"
    )
    wechat_previous_aes_key: SecretStr | None = Field(
        None, description="the EncodingAESKey before the last change, still accepted"
    )
    wechat_api_base: str = Field("https://api.weixin.qq.com", description="WeChat's API (tests: a local one)")
    wechat_reply_seconds: float = Field(
        4.0, gt=0, lt=5, description="how long a callback waits for the bot to reply passively"
    )

    # -- durable handling ----------------------------------------------------------------------
    replica_name: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="this process's name among the replicas (stable across restarts); default host:port",
    )
    reclaim_seconds: float = Field(
        10.0,
        gt=0,
        description="a message left unhandled this long by a replica (it died) is handled by another",
    )

    # -- handoff and agents --------------------------------------------------------------------
    assign_workers: int = Field(
        1, ge=0, description="handoff assigners this process runs (0: another process does)"
    )
    routing: Literal["assign", "broadcast"] = Field(
        "assign",
        description="assign: waiting chats go to the best online agent; broadcast: agents accept them",
    )
    agent_token_hours: float = Field(12, gt=0, description="how long an agent's sign-in stays valid")
    seed_demo_agents: bool = Field(
        True, description="create the demo agents of the README when there are no agents yet"
    )
