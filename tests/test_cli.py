"""The `baton` command line, run as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, TINY_KB

BATON = [sys.executable, "-m", "api.cli"]


def baton(*args: str, stdin: str | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [*BATON, *args], cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=timeout
    )


def test_help_names_every_command():
    result = baton("--help")
    assert result.returncode == 0
    for command in ("train", "validate", "evaluate", "chat"):
        assert command in result.stdout


def test_validate_good_and_bad(tmp_path):
    ok = baton("validate", "--kb", str(TINY_KB))
    assert ok.returncode == 0 and "OK - 7 intents, 56 examples" in ok.stdout
    bad = tmp_path / "kb"
    shutil.copytree(TINY_KB, bad)
    (bad / "domain.yml").write_text(
        (bad / "domain.yml").read_text() + "  utter_unknown_thing:\n  - text: hi\n"
    )
    refused = baton("validate", "--kb", str(bad))
    assert refused.returncode == 2
    assert f"{bad / 'domain.yml'}:" in refused.stderr
    assert "response 'utter_unknown_thing' is for unknown intent 'unknown_thing'" in refused.stderr


def test_evaluate_json_schema(tmp_path):
    report = tmp_path / "report.json"
    result = baton(
        "evaluate",
        "--train",
        str(TINY_KB / "nlu.yml"),
        "--test",
        str(TINY_KB / "nlu.yml"),
        "--json",
        "--report",
        str(report),
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert list(metrics) == [
        "accuracy",
        "in_scope_accuracy",
        "oos_recall",
        "oos_precision",
        "macro_f1",
        "train_seconds",
        "predict_ms_p50",
    ]
    for key in ("accuracy", "in_scope_accuracy", "oos_recall", "oos_precision", "macro_f1"):
        assert 0 <= metrics[key] <= 1
    assert metrics["train_seconds"] > 0 and metrics["predict_ms_p50"] > 0
    assert json.loads(report.read_text())["encoder"] == "e5-small"


def test_evaluate_bad_input_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("nlu:\n- intent: a\n  examples: |\n    not a list item\n")
    result = baton("evaluate", "--train", str(broken), "--test", str(TINY_KB / "nlu.yml"), "--json")
    assert result.returncode == 2
    assert f"{broken}:4: example must start with '- '" in result.stderr
    assert result.stdout == ""
    missing = baton("evaluate", "--train", str(tmp_path / "nope.yml"), "--test", str(broken), "--json")
    assert missing.returncode == 2 and "cannot read file" in missing.stderr


def test_threshold_out_of_range_is_refused():
    result = baton("train", "--kb", str(TINY_KB), "--threshold", "1.5")
    assert result.returncode == 2 and "--threshold must be between 0 and 1" in result.stderr


def test_baton_rasa_refuses_what_it_cannot_run_before_training(tmp_path):
    no_venv = subprocess.run(
        [*BATON, "rasa", "train", "--kb", str(TINY_KB)],
        cwd=ROOT,
        env={**os.environ, "BATON_RASA_VENV": str(tmp_path / "none"), "BATON_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert no_venv.returncode == 2 and "make rasa-venv" in no_venv.stderr
    bad_port = baton("rasa", "serve", "--port", "0")
    assert bad_port.returncode == 2 and "port 0 is not between 1 and 65535" in bad_port.stderr
    assert not (tmp_path / "rasa").exists()  # nothing was prepared


@pytest.mark.slow
def test_train_then_chat(tmp_path):
    models = tmp_path / "models"
    trained = baton("train", "--kb", str(TINY_KB), "--model-dir", str(models))
    assert trained.returncode == 0, trained.stderr
    current = models / "tiny_kb" / "current"
    assert (current / "nlu" / "nlu.json").exists() and (current / "index" / "manifest.json").exists()
    first = current.resolve()

    chat = baton(
        "chat",
        "--kb",
        str(TINY_KB),
        "--model-dir",
        str(models),
        stdin="退款多久到账\nhow much is shipping\nquit\n",
    )
    assert chat.returncode == 0, chat.stderr
    assert "training" not in chat.stdout  # the published model was reused
    assert "退款 1-3 天到账。" in chat.stdout
    assert "Shipping is free over 99 yuan." in chat.stdout
    assert current.resolve() == first
