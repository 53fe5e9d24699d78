"""Preparing a knowledge base for Rasa, and the commands and environment Rasa runs with."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot.rasa_project import (
    RASA_DIR,
    RasaSetupError,
    prepare,
    rasa_binary,
    rasa_environment,
    server_command,
    train_command,
)
from tests.conftest import TINY_KB


def test_a_workspace_merges_the_knowledge_base_with_baton_s_actions_and_sets_the_epochs(tmp_path):
    workspace = prepare(TINY_KB, tmp_path / "ws", epochs=7)
    domains = sorted(p.name for p in workspace.domain.iterdir())
    assert domains == ["baton_actions.yml", "knowledge_base.yml"]
    assert (workspace.domain / "knowledge_base.yml").read_text() == (TINY_KB / "domain.yml").read_text()
    pipeline = yaml.safe_load(workspace.config.read_text())["pipeline"]
    epochs = {c["name"]: c.get("epochs") for c in pipeline}
    assert epochs["DIETClassifier"] == 7 and epochs["ResponseSelector"] == 7
    assert pipeline[0]["name"] == "JiebaTokenizer"  # the mixed config: Chinese and English
    # Rasa runs in the workspace: every path it is given must hold from there
    assert all(path.is_absolute() for path in workspace.data)
    assert workspace.data == (TINY_KB.resolve() / "nlu.yml", RASA_DIR / "data")


def test_the_english_config_keeps_rasa_s_own_epochs_when_none_are_given(tmp_path):
    workspace = prepare(TINY_KB, tmp_path / "ws", config="en")
    pipeline = yaml.safe_load(workspace.config.read_text())["pipeline"]
    assert pipeline[0]["name"] == "WhitespaceTokenizer"
    assert {c["name"]: c.get("epochs") for c in pipeline}["DIETClassifier"] == 100


@pytest.mark.parametrize(
    ("change", "message"),
    [("no_nlu", "has no nlu.yml"), ("bad_config", "unknown Rasa config"), ("zero_epochs", "at least 1")],
)
def test_what_rasa_cannot_train_is_refused_clearly(tmp_path, kb_copy, change, message):
    args: dict = {}
    if change == "no_nlu":
        (kb_copy / "nlu.yml").unlink()
    elif change == "bad_config":
        args["config"] = "fr"
    else:
        args["epochs"] = 0
    with pytest.raises(RasaSetupError, match=message):
        prepare(kb_copy, tmp_path / "ws", **args)


def test_a_missing_rasa_venv_says_how_to_build_it(tmp_path):
    with pytest.raises(RasaSetupError, match="make rasa-venv"):
        rasa_binary(tmp_path / "no-venv")


def test_a_relative_venv_gives_an_absolute_command(tmp_path, monkeypatch):
    (tmp_path / ".venv-rasa" / "bin").mkdir(parents=True)
    (tmp_path / ".venv-rasa" / "bin" / "rasa").touch()
    monkeypatch.chdir(tmp_path)
    binary = rasa_binary(Path(".venv-rasa"))
    assert binary == tmp_path / ".venv-rasa" / "bin" / "rasa"
    workspace = prepare(TINY_KB, tmp_path / "ws")
    assert train_command(binary, workspace)[0] == str(binary)
    command = server_command(binary, workspace.model, 5005, "tok")
    assert command[command.index("--interface") + 1] == "127.0.0.1"
    assert command[command.index("--auth-token") + 1] == "tok"


def test_the_environment_points_rasa_at_redis_and_baton():
    env = rasa_environment("redis://10.0.0.5:6390/3", "http://127.0.0.1:5055/webhook", "http://b:8000", "s3")
    assert (env["REDIS_HOST"], env["REDIS_PORT"], env["REDIS_DB"]) == ("10.0.0.5", "6390", "3")
    assert env["BATON_RASA_ACTIONS_TOKEN"] == "s3" and env["RASA_TELEMETRY_ENABLED"] == "false"
    assert env["SANIC_HOST"] == "127.0.0.1"
    # every variable endpoints.yml reads is set (Rasa refuses to start on an unset one)
    lines = (RASA_DIR / "endpoints.yml").read_text().splitlines()
    endpoints = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert set(re.findall(r"\$\{(\w+)\}", endpoints)) <= set(env)


def test_a_redis_address_rasa_cannot_use_is_refused():
    with pytest.raises(RasaSetupError, match="redis://host:port/db"):
        rasa_environment("unix:///tmp/redis.sock", "http://a", "http://b", None)
