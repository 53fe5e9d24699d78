"""What the customer is told around a handoff, in their language (``zh`` or ``en``).

The bot's own words for an explicit request and for a complaint come from the knowledge base
(``utter_human_handoff``, ``utter_complaint``); these are the rest: why a person is coming,
where the customer stands in the queue, that they can leave a message when nobody is online,
that an agent joined, and the rating request at the end.
"""

from __future__ import annotations

import math
import re

from handoff.signals import (
    EXPLICIT_REQUEST,
    FALLBACK_STREAK,
    NEGATIVE_SENTIMENT,
    REPEATED_QUESTION,
    SENSITIVE_TOPIC,
    TOO_MANY_TURNS,
)

_TEXTS: dict[str, dict[str, str]] = {
    EXPLICIT_REQUEST: {
        "zh": "好的，正在为您转接人工客服，请稍候～",
        "en": "Sure, I'm connecting you to a member of our team now, please hold on.",
    },
    NEGATIVE_SENTIMENT: {
        "zh": "非常抱歉给您带来了不好的体验，我马上为您转接人工客服，请稍候。",
        "en": "I'm really sorry about this. I'm bringing in a person from our team to help you right away.",
    },
    REPEATED_QUESTION: {
        "zh": "抱歉一直没能解决您的问题，我这就为您转接人工客服。",
        "en": "Sorry I haven't been able to answer that properly. Let me bring in a person from our team.",
    },
    FALLBACK_STREAK: {
        "zh": "抱歉，我没能理解您的问题，这就为您转接人工客服。",
        "en": "Sorry, I'm not getting this right. Let me connect you to a person from our team.",
    },
    TOO_MANY_TURNS: {
        "zh": "为了更快帮您解决问题，我为您转接人工客服。",
        "en": "To sort this out faster, I'm connecting you to a person from our team.",
    },
    SENSITIVE_TOPIC: {
        "zh": "您反映的问题我们非常重视，正在为您转接人工客服专门处理。",
        "en": "We take this seriously. I'm connecting you to a person from our team who can handle it.",
    },
    "position": {
        "zh": "您已进入人工客服队列，前面还有 {ahead} 位客户，预计等待约 {minutes} 分钟。",
        "en": "You're number {position} in the queue for a person; the estimated wait is about {minutes} min.",
    },
    "next": {
        "zh": "您已进入人工客服队列，客服马上就来，请稍候。",
        "en": "You're next in the queue: a person from our team will be with you in a moment.",
    },
    "leave_message": {
        "zh": "现在暂时没有客服在线。您可以直接在这里留言说明问题，客服上线后会第一时间回复您。",
        "en": "No one from our team is online right now. Leave a message here describing the problem, and a person will reply as soon as they're back.",
    },
    "joined": {
        "zh": "客服 {name} 已接入，正在为您服务。",
        "en": "{name} from our team has joined the chat.",
    },
    "transferred": {
        "zh": "正在为您转接其他客服，请稍候。",
        "en": "I'm passing you to a colleague who can help with this; please hold on.",
    },
    "handback": {
        "zh": "人工客服已结束本次服务，后续问题可以继续问我哦。",
        "en": "Our team member has handed you back to the assistant. Ask me anything else you need.",
    },
    "resolved": {
        "zh": "本次服务已结束，感谢您的耐心！请为本次服务打分（1-5 分，5 分最满意）：",
        "en": "This conversation is resolved. Thanks for your patience! How would you rate our help (1-5, 5 is best)?",
    },
    "rated": {
        "zh": "感谢您的评价！如果还有其他问题，随时发消息给我们。",
        "en": "Thank you for your rating! If anything else comes up, just send us a message.",
    },
}

RATING_PAYLOAD = re.compile(r"^\s*/rate_([1-5])\s*$")


def notice(key: str, language: str | None, **values: object) -> str:
    """The customer-facing text ``key`` in ``language`` (English when it is not ``zh``)."""
    texts = _TEXTS[key]
    return texts.get(language or "en", texts["en"]).format(**values)


def escalation_text(reason: str, language: str | None) -> str:
    """What the bot says when it hands over for ``reason``."""
    return notice(reason, language)


def standing_text(
    position: int | None, estimated_seconds: float | None, ticket: bool, language: str | None
) -> str:
    """Where the customer stands: queue position and wait, or the invitation to leave a message."""
    if ticket:
        return notice("leave_message", language)
    if not position or (position <= 1 and not estimated_seconds):
        return notice("next", language)
    minutes = max(1, math.ceil((estimated_seconds or 0) / 60))
    return notice("position", language, position=position, ahead=position - 1, minutes=minutes)


def rating_buttons(language: str | None) -> list[dict[str, str]]:
    """The 1-5 buttons under the rating request; each sends ``/rate_N``."""
    del language  # the same stars read in both languages
    return [{"title": "★" * n, "payload": f"/rate_{n}"} for n in range(1, 6)]


def parse_rating(text: str) -> int | None:
    """The score of a rating button's payload (``/rate_4`` -> 4), else None."""
    match = RATING_PAYLOAD.match(text)
    return int(match.group(1)) if match else None
