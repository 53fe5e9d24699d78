"""Custom actions that give a Rasa assistant Baton's human handoff and knowledge answers.

Rasa's action server (rasa-sdk 3.6, its own Python 3.10 venv) runs these; they call Baton's
``/api/v1/rasa`` API over HTTP and import nothing of Baton, so the two can be deployed apart.

Configuration, from the action server's environment:

- ``BATON_URL``: where Baton answers (default ``http://127.0.0.1:8000``);
- ``BATON_RASA_ACTIONS_TOKEN``: the bearer token Baton expects (Baton's setting of the same name);
- ``BATON_TIMEOUT_SECONDS``: the longest wait for Baton (default 10).

``action_baton_handoff`` copies the conversation into Baton's queue and pauses Rasa, so the bot
is silent while a person has the chat; the chat widget gets ``handoff_host`` (Rasa's handoff
pattern) and Baton's web-chat token to carry on there. ``action_baton_answer`` answers from
Baton's knowledge base.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ConversationPaused
from rasa_sdk.executor import CollectingDispatcher

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_SECONDS = 10.0
REASON_SLOT = "baton_handoff_reason"
LANGUAGE_SLOT = "language"
EXPLICIT_REQUEST = "explicit_request"
# Rasa intents and the handoff reason each means; anything else is a plain request for a person.
REASON_BY_INTENT = {"human_handoff": EXPLICIT_REQUEST}
PERSON_PAYLOAD = "/human_handoff"
# Baton refuses bodies over 64 KiB and texts over 4000 characters: send a slim transcript.
MAX_BODY_BYTES = 60_000
MAX_TEXT_CHARS = 4000
MAX_EVENTS = 200

TEXTS: dict[str, dict[str, str]] = {
    "connecting": {
        "en": "I'm connecting you to a person from our team, please hold on.",
        "zh": "正在为您转接人工客服，请稍候。",
    },
    "no_person": {
        "en": "Sorry, I couldn't reach a person from our team right now. Please try again in a few minutes.",
        "zh": "抱歉，暂时无法为您转接人工客服，请过几分钟再试。",
    },
    "unknown": {
        "en": "Sorry, I don't know that one. Would you like to talk to a person?",
        "zh": "抱歉，这个问题我还不会回答。需要为您转接人工客服吗？",
    },
    "person_button": {"en": "Talk to a person", "zh": "转人工客服"},
    "unavailable": {
        "en": "Sorry, I can't look that up right now. Please try again in a moment.",
        "zh": "抱歉，暂时无法查询，请稍后再试。",
    },
}


class BatonError(Exception):
    """Baton could not be reached, or answered with an error."""


@dataclass(frozen=True)
class BatonClient:
    """Baton's Rasa API over ``urllib`` (read from the environment at each call, so a changed
    setting needs no restart of the action server)."""

    url: str
    token: str
    timeout: float

    @classmethod
    def from_env(cls) -> BatonClient:
        """The client the environment describes."""
        try:
            timeout = float(os.environ.get("BATON_TIMEOUT_SECONDS") or DEFAULT_TIMEOUT_SECONDS)
        except ValueError:
            timeout = DEFAULT_TIMEOUT_SECONDS
        url = (os.environ.get("BATON_URL") or DEFAULT_URL).rstrip("/")
        return cls(url, os.environ.get("BATON_RASA_ACTIONS_TOKEN", ""), max(timeout, 0.1))

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` as JSON to ``/api/v1/rasa<path>``; the JSON answer.

        Raises:
            BatonError: a network failure, a timeout, an error status or an answer that is not JSON.
        """
        request = urllib.request.Request(
            f"{self.url}/api/v1/rasa{path}",
            data=json.dumps(body, ensure_ascii=False).encode("utf-8"),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                answer = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise BatonError(f"Baton answered {exc.code} to {path}: {detail}") from exc
        except (OSError, ValueError) as exc:  # unreachable, timed out, not JSON
            raise BatonError(f"Baton could not be reached at {self.url}: {exc}") from exc
        if not isinstance(answer, dict):
            raise BatonError(f"Baton's answer to {path} is not a JSON object")
        return answer


def text_in(key: str, language: str | None) -> str:
    """The action's own message ``key`` in ``language`` (English unless it is ``zh``)."""
    return TEXTS[key].get(language or "en", TEXTS[key]["en"])


def slot_language(tracker: Tracker) -> str | None:
    """The conversation's language from the ``language`` slot, when it is one Baton speaks."""
    value = tracker.get_slot(LANGUAGE_SLOT)
    return value if value in ("zh", "en") else None


def handoff_reason(tracker: Tracker) -> str:
    """The reason a story or rule set in ``baton_handoff_reason``, else the one the latest intent means."""
    chosen = tracker.get_slot(REASON_SLOT)
    if isinstance(chosen, str) and chosen.strip():
        return chosen.strip()
    intent = (tracker.latest_message.get("intent") or {}).get("name")
    return REASON_BY_INTENT.get(intent or "", EXPLICIT_REQUEST)


def _slim(event: dict[str, Any]) -> dict[str, Any] | None:
    """A user or bot event with only what Baton reads (Rasa's rankings make events large)."""
    if event.get("event") not in ("user", "bot") or not isinstance(event.get("text"), str):
        return None
    slim: dict[str, Any] = {
        "event": event["event"],
        "text": event["text"][:MAX_TEXT_CHARS],
        "timestamp": event.get("timestamp"),
    }
    parse = event.get("parse_data") or {}
    intent = parse.get("intent") or {}
    if event["event"] == "user" and intent.get("name"):
        slim["parse_data"] = {
            "intent": {"name": intent["name"], "confidence": intent.get("confidence")},
            "entities": [
                {k: e[k] for k in ("entity", "value", "start", "end") if k in e}
                for e in parse.get("entities") or ()
                if isinstance(e, dict) and e.get("entity") and isinstance(e.get("value"), (str, int, float))
            ][:50],
        }
    return slim


def transcript(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation's user and bot events, newest kept when it is too long to send whole."""
    slim = [s for s in (_slim(e) for e in events if isinstance(e, dict)) if s is not None][-MAX_EVENTS:]
    while len(slim) > 1 and len(json.dumps(slim, ensure_ascii=False).encode("utf-8")) > MAX_BODY_BYTES:
        slim = slim[len(slim) // 10 or 1 :]  # drop the oldest tenth: the latest turns matter most
    return slim


class ActionBatonHandoff(Action):
    """Hands the conversation to a person in Baton's queue and pauses the Rasa bot."""

    def name(self) -> str:
        """The action's name in the domain."""
        return "action_baton_handoff"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Queue the conversation; on failure apologise and leave the bot on (never pause into silence)."""
        client = BatonClient.from_env()
        language = slot_language(tracker)
        body: dict[str, Any] = {
            "sender_id": tracker.sender_id,
            "reason": handoff_reason(tracker),
            "events": transcript(list(tracker.events)),
        }
        if language is not None:
            body["language"] = language
        try:
            answer = await asyncio.to_thread(client.post, "/handoff", body)
        except BatonError as exc:
            log.warning("handoff of %s failed: %s", tracker.sender_id, exc)
            dispatcher.utter_message(text=text_in("no_person", language))
            return []
        spoken = answer.get("language") or language
        dispatcher.utter_message(text=answer.get("notice") or text_in("connecting", spoken))
        dispatcher.utter_message(
            json_message={
                "handoff_host": client.url,
                "title": "Baton",
                "baton": {
                    "conversation_id": answer.get("conversation_id"),
                    "token": answer.get("token"),
                    "visitor_id": answer.get("visitor_id"),
                },
            }
        )
        return [ConversationPaused()]


class ActionBatonAnswer(Action):
    """Answers the latest message from Baton's knowledge base, or offers a person."""

    def name(self) -> str:
        """The action's name in the domain."""
        return "action_baton_answer"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Utter Baton's answer, or "I don't know" with a button to a person; no slot is set."""
        language = slot_language(tracker)
        text = (tracker.latest_message.get("text") or "").strip()[:MAX_TEXT_CHARS]
        answer: dict[str, Any] = {}
        if text:
            body: dict[str, Any] = {"text": text}
            if language is not None:
                body["language"] = language
            try:
                answer = await asyncio.to_thread(BatonClient.from_env().post, "/answer", body)
            except BatonError as exc:
                log.warning("answer for %s failed: %s", tracker.sender_id, exc)
                dispatcher.utter_message(text=text_in("unavailable", language))
                return []
        if answer.get("answer"):
            dispatcher.utter_message(text=answer["answer"])
            return []
        spoken = answer.get("language") or language
        dispatcher.utter_message(
            text=text_in("unknown", spoken),
            buttons=[{"title": text_in("person_button", spoken), "payload": PERSON_PAYLOAD}],
        )
        return []
