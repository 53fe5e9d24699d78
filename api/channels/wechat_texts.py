"""What Baton says on WeChat by itself, in Chinese and English, and how a turn reads there.

WeChat text messages have no buttons: quick replies are listed by number, and the follower
answers with the number (`api.channels.wechat` maps it back to the button's payload).
"""

from __future__ import annotations

from conversations.model import Turn

TEXTS: dict[str, dict[str, str]] = {
    "greeting": {
        "zh": "您好，欢迎关注！我是智能客服，有什么可以帮您？直接发文字给我就好；需要人工客服时回复“转人工”。",
        "en": "Hello and welcome! I'm the support assistant: just type your question. "
        "Reply \u201cagent\u201d at any time to talk to a person.",
    },
    "type_please": {
        "zh": "抱歉，我暂时只能看懂文字消息。请直接输入您的问题，需要人工客服请回复“转人工”。",
        "en": "Sorry, I can only read text messages for now. Please type your question, "
        "or reply \u201cagent\u201d to talk to a person.",
    },
    "too_long": {
        "zh": "这条消息太长了，请精简一下或分几条发送。",
        "en": "That message is too long. Please shorten it or send it in parts.",
    },
    "rate_limited": {
        "zh": "您发送得太快了，请稍等片刻再发。",
        "en": "You're sending messages too quickly. Please wait a moment.",
    },
    "choose": {"zh": "回复序号即可选择：", "en": "Reply with a number to choose:"},
    "unreachable": {
        "zh": "未送达（微信）：客户超过 48 小时没有发消息，微信不再允许向其发送消息，直到客户再次发来消息。原消息：{text}",
        "en": "Not delivered on WeChat: the customer has not written for 48 hours, and WeChat allows "
        "no messages until they write again. The message was: {text}",
    },
    "not_delivered": {
        "zh": "未送达（微信错误 {code}）：{text}",
        "en": "Not delivered on WeChat (error {code}): {text}",
    },
}


def text(key: str, language: str | None, **values: str) -> str:
    """One of `TEXTS` in ``language`` (Chinese unless English), its ``{placeholders}`` filled."""
    variants = TEXTS[key]
    return variants["en" if language == "en" else "zh"].format(**values)


def render(turn: Turn) -> str:
    """The turn as one WeChat text: its text, then its quick replies numbered."""
    if not turn.buttons:
        return turn.text
    lines = [turn.text, "", text("choose", turn.language)]
    lines += [
        f"{n}. {button.get('title') or button.get('payload', '')}" for n, button in enumerate(turn.buttons, 1)
    ]
    return "\n".join(lines)


def payloads(turn: Turn) -> list[str]:
    """The payloads of the turn's quick replies, in their numbered order."""
    return [button.get("payload") or button.get("title", "") for button in turn.buttons]
