"""The Rasa HTTP client: Rasa's answers read into Baton's parse, and every way a server can fail.

Failures are played by real HTTP servers on 127.0.0.1 (a slow one, a broken one, a closed
port), so the timeouts are httpx's own, not simulated.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bot.nlu.rasa_client import RasaNLU, RasaUnavailable, to_parse_result
from conversations.redis_server import free_port

# An answer of Rasa 3.6's /model/parse for a retrieval intent, trimmed to what Baton reads.
FAQ_ANSWER = {
    "text": "退款多久到账 LM2024051234",
    "intent": {"name": "faq", "confidence": 0.9},
    "entities": [
        {
            "entity": "order_number",
            "start": 7,
            "end": 19,
            "value": "LM2024051234",
            "extractor": "RegexEntityExtractor",
        },
        # DIET often finds the same span: Baton keeps it once
        {
            "entity": "order_number",
            "start": 7,
            "end": 19,
            "value": "LM2024051234",
            "extractor": "DIETClassifier",
        },
    ],
    "intent_ranking": [
        {"name": "faq", "confidence": 0.9},
        {"name": "order_status", "confidence": 0.08},
        {"name": "greet", "confidence": 0.02},
    ],
    "response_selector": {
        "all_retrieval_intents": ["faq"],
        "default": {
            "response": {"intent_response_key": "faq/refund_time", "confidence": 0.8},
            "ranking": [
                {"intent_response_key": "faq/refund_time", "confidence": 0.8},
                {"intent_response_key": "faq/shipping_cost", "confidence": 0.2},
            ],
        },
    },
}


def test_a_retrieval_intent_becomes_its_topic_with_the_joint_confidence():
    parse = to_parse_result(FAQ_ANSWER["text"], FAQ_ANSWER)
    assert parse.intent.name == "faq/refund_time"
    assert parse.intent.confidence == pytest.approx(0.72)
    assert [s.name for s in parse.ranking] == [
        "faq/refund_time",
        "faq/shipping_cost",
        "order_status",
        "greet",
    ]
    assert parse.ranking[1].confidence == pytest.approx(0.18)
    assert parse.language == "zh"
    (entity,) = parse.entities
    assert (entity.entity, entity.value, entity.text) == ("order_number", "LM2024051234", "LM2024051234")


def test_a_plain_intent_and_rasas_fallback_keep_their_names():
    answer = {
        "intent": {"name": "nlu_fallback", "confidence": 0.3},
        "entities": [],
        "intent_ranking": [
            {"name": "nlu_fallback", "confidence": 0.3},
            {"name": "greet", "confidence": 0.25},
        ],
    }
    parse = to_parse_result("blorp", answer)
    assert parse.intent.name == "nlu_fallback"
    # the best real guess stays first in the ranking, as Baton's own engine gives it
    assert [s.name for s in parse.ranking] == ["greet"]
    assert parse.language == "en"


@pytest.mark.parametrize(
    "answer",
    [{"intent": {"name": None, "confidence": 0.0}}, {"text": "no intent"}, {"intent": "greet"}],
    ids=["no-classifier", "no-intent", "not-a-dict"],
)
def test_an_answer_that_is_not_rasas_is_refused(answer):
    with pytest.raises((KeyError, TypeError, ValueError)):
        to_parse_result("hi", answer)


class _Handler(BaseHTTPRequestHandler):
    """Plays a Rasa server: its behaviour is the server's ``mode``."""

    def do_POST(self) -> None:
        server = self.server
        server.requests.append(self.path)  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = server.mode  # type: ignore[attr-defined]
        if mode == "slow":
            time.sleep(1.5)
        if mode == "error":
            self._reply(500, b'{"status":"failure"}')
        elif mode == "html":
            self._reply(200, b"<html>a proxy's page</html>")
        else:
            self._reply(200, json.dumps({**FAQ_ANSWER, "text": body["text"]}).encode())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # the client may have given up waiting (the slow mode): nothing to send it then
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def rasa_like(mode: str) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.mode = mode  # type: ignore[attr-defined]
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_a_parse_over_http_sends_the_token_and_reads_the_answer():
    with rasa_like("ok") as server, RasaNLU(_url(server), token="s3cret", timeout=2) as rasa:
        parse = rasa.parse("退款多久到账 LM2024051234")
    assert parse.intent.name == "faq/refund_time"
    assert server.requests == ["/model/parse?token=s3cret"]


def test_a_slow_server_times_out_with_a_clear_error():
    with (
        rasa_like("slow") as server,
        RasaNLU(_url(server), timeout=0.2) as rasa,
        pytest.raises(RasaUnavailable, match=r"did not answer within 0.2 s"),
    ):
        rasa.parse("hello")


@pytest.mark.parametrize(("mode", "message"), [("error", "answered 500"), ("html", "cannot read")])
def test_an_error_or_a_foreign_answer_is_unavailable(mode, message):
    with (
        rasa_like(mode) as server,
        RasaNLU(_url(server), timeout=2) as rasa,
        pytest.raises(RasaUnavailable, match=message),
    ):
        rasa.parse("hello")


def test_a_closed_port_is_unavailable_and_not_ready():
    with RasaNLU(f"http://127.0.0.1:{free_port()}", timeout=2) as rasa:
        with pytest.raises(RasaUnavailable, match="unreachable"):
            rasa.parse("hello")
        assert rasa.ready() is False
