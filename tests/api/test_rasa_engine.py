"""Rasa for real: `baton rasa serve` trains the tiny knowledge base with Rasa 3.6 (from .venv-rasa,
which `make test` builds), runs the Rasa server and Baton's action server, and `baton serve`
understands through it (BATON_NLU_ENGINE=rasa). Then a Rasa conversation is escalated to Baton
through action_baton_handoff, and, last, Rasa is stopped to see Baton's engine stand in.

The module's tests share one Rasa (training and start-up take minutes on 2 cores) and run in
file order: the last one stops Rasa.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.nlu.rasa_client import RasaNLU, RasaUnavailable
from conversations.redis_server import free_port
from tests.api.conftest import Agent, app_headers, clear_desk
from tests.conftest import ROOT, TINY_KB, ServiceProcess

RASA_VENV = ROOT / ".venv-rasa"
RASA_TOKEN = "rasa-test-token-0123456789"
ACTIONS_TOKEN = "actions-test-token-0123456789"
EPOCHS = "20"  # enough for the tiny knowledge base; the first epoch (graph compilation) is most of it
READY_SECONDS = 900  # training and loading TensorFlow take minutes when the machine is busy


class RasaStack:
    """The running pieces: Rasa (with its action server) and a Baton that understands through it."""

    def __init__(self, workdir: Path, redis_base: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "rasa.log"
        self.baton = ServiceProcess(
            TINY_KB,
            workdir / "baton",
            f"{redis_base}/5",
            env={
                "BATON_NLU_ENGINE": "rasa",
                "BATON_RASA_URL": self.url,
                "BATON_RASA_TOKEN": RASA_TOKEN,
                "BATON_RASA_ACTIONS_TOKEN": ACTIONS_TOKEN,
                "BATON_RASA_RETRY_SECONDS": "1",
            },
        )
        (workdir / "baton").mkdir()
        command = [sys.executable, "-m", "api.cli", "rasa", "serve", "--kb", str(TINY_KB), "--epochs", EPOCHS]
        command += [
            "--port",
            str(self.port),
            "--actions-port",
            str(free_port()),
            "--baton-url",
            self.baton.url,
        ]
        env = {
            **os.environ,
            "BATON_DATA_DIR": str(workdir / "var"),
            "BATON_RASA_VENV": str(RASA_VENV),
            "BATON_RASA_TOKEN": RASA_TOKEN,
            "BATON_RASA_ACTIONS_TOKEN": ACTIONS_TOKEN,
            "REDIS_URL": f"{redis_base}/6",  # Rasa's trackers, apart from Baton's data
        }
        with self.log_path.open("wb") as log:
            self.rasa = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_SECONDS
        with RasaNLU(self.url, RASA_TOKEN, timeout=5) as nlu:
            while not nlu.ready():
                if self.rasa.poll() is not None:
                    raise RuntimeError(f"baton rasa serve ended ({self.rasa.returncode}):\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Rasa not ready after {READY_SECONDS} s:\n{self.log_tail()}")
                time.sleep(2)

    def stop_rasa(self) -> None:
        if self.rasa.poll() is None:
            self.rasa.send_signal(signal.SIGTERM)
            try:
                self.rasa.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.rasa.kill()
                self.rasa.wait()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def stack(redis_server, tmp_path_factory):
    if not (RASA_VENV / "bin" / "rasa").exists():
        pytest.fail(f"no Rasa venv at {RASA_VENV}: run `make rasa-venv` (make test builds it)")
    stack = RasaStack(tmp_path_factory.mktemp("rasa"), redis_server.url.rsplit("/", 1)[0])
    try:
        stack.baton.start()  # trains Baton's own model meanwhile: it stands in whenever Rasa cannot answer
        stack.wait_ready()
        yield stack
    finally:
        stack.stop_rasa()
        stack.baton.stop()


def rasa_says(stack: RasaStack, sender: str, text: str) -> list[dict]:
    """A customer's message through Rasa's REST channel; Rasa's replies."""
    answer = httpx.post(
        f"{stack.url}/webhooks/rest/webhook", json={"sender": sender, "message": text}, timeout=60
    )
    answer.raise_for_status()
    return answer.json()


def tracker_paused(stack: RasaStack, sender: str) -> bool:
    """Whether Rasa has paused the conversation of ``sender``."""
    tracker = httpx.get(
        f"{stack.url}/conversations/{sender}/tracker", params={"token": RASA_TOKEN}, timeout=30
    )
    tracker.raise_for_status()
    return tracker.json()["paused"]


def nlu_figures(stack: RasaStack) -> dict:
    return httpx.get(f"{stack.baton.url}/api/v1/stats", timeout=10).json()["live"]


def test_rasa_understands_chinese_and_english_through_baton_s_client(stack):
    with RasaNLU(stack.url, RASA_TOKEN, timeout=10) as rasa:
        refund = rasa.parse("退款要几天")
        assert (refund.intent.name, refund.language) == ("faq/refund_time", "zh")
        assert rasa.parse("is delivery free").intent.name == "faq/shipping_cost"
        order = rasa.parse("where is my order LM2024051234")
        assert order.intent.name == "order_status"
        assert order.entity_values("order_number") == ["LM2024051234"]
        assert rasa.parse("转人工").intent.name == "human_handoff"


def test_the_token_guards_rasa(stack):
    with (
        RasaNLU(stack.url, "wrong-token", timeout=10) as rasa,
        pytest.raises(RasaUnavailable, match="answered 401"),
    ):
        rasa.parse("hello")


def test_baton_answers_with_rasa_understanding(stack):
    headers = app_headers("rasa-engine-user")
    for text, expected in (("退款多久到账", "退款 1-3 天到账"), ("how much is shipping", "free over 99")):
        answer = httpx.post(
            f"{stack.baton.url}/api/v1/app/messages", json={"text": text}, headers=headers, timeout=30
        )
        assert answer.status_code == 200, answer.text
        assert expected in answer.json()["replies"][0]["text"]
    figures = nlu_figures(stack)
    assert figures["nlu_engine"] == "rasa"
    assert figures["nlu_fallback_parses"] == 0  # Rasa understood both: Baton's engine never stood in


def test_action_baton_answer_answers_a_rasa_customer_from_baton_s_index(stack):
    replies = rasa_says(stack, "rasa-answer-1", "how long does a refund take")
    assert any("1-3 days" in r.get("text", "") for r in replies), replies


def test_action_baton_handoff_queues_the_conversation_and_pauses_rasa(stack):
    clear_desk(stack.baton)
    rasa_says(stack, "rasa-handoff-1", "how much is shipping")
    replies = rasa_says(stack, "rasa-handoff-1", "I want to talk to a person")
    custom = [r["custom"] for r in replies if "custom" in r]
    assert custom and custom[0]["handoff_host"] == stack.baton.url, replies
    conversation_id = custom[0]["baton"]["conversation_id"]

    supervisor = Agent(stack.baton, "sam")  # sees every waiting chat
    waiting = supervisor.call("GET", "/queue").json()["waiting"]
    entry = next(h for h in waiting if h["conversation_id"] == conversation_id)
    assert entry["reasons"][0] == "explicit_request"
    transcript = supervisor.call("GET", f"/conversations/{conversation_id}").json()["transcript"]
    texts = [(t["sender"], t["text"]) for t in transcript]
    assert ("customer", "how much is shipping") in texts
    assert ("customer", "I want to talk to a person") in texts

    assert tracker_paused(stack, "rasa-handoff-1") is True
    # Paused: Rasa no longer answers this customer; the person does.
    assert rasa_says(stack, "rasa-handoff-1", "hello?") == []

    # The person resolves the chat: Baton resumes the Rasa conversation, and Rasa answers again.
    supervisor.online()  # with the default routing the waiting chat comes to sam
    deadline = time.monotonic() + 30
    while conversation_id not in {
        c["conversation_id"] for c in supervisor.call("GET", "/chats").json()["chats"]
    }:
        assert time.monotonic() < deadline, "the chat was not assigned to sam"
        time.sleep(0.2)
    assert supervisor.call("POST", f"/conversations/{conversation_id}/resolve").status_code == 200
    while tracker_paused(stack, "rasa-handoff-1"):
        assert time.monotonic() < deadline + 30, "Baton did not resume the Rasa conversation"
        time.sleep(0.2)
    replies = rasa_says(stack, "rasa-handoff-1", "refund timeline please")
    assert any("1-3 days" in r.get("text", "") for r in replies), replies
    supervisor.online(False)


def test_when_rasa_stops_baton_s_engine_answers_and_it_is_counted(stack):
    stack.stop_rasa()
    answer = httpx.post(
        f"{stack.baton.url}/api/v1/app/messages",
        json={"text": "运费多少"},
        headers=app_headers("rasa-down-user"),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert "包邮" in answer.json()["replies"][0]["text"]
    figures = nlu_figures(stack)
    assert figures["nlu_fallback_parses"] >= 1 and figures["nlu_rasa_down"] == 1
    assert "Baton's own engine answers" in stack.baton.log_tail(200)
