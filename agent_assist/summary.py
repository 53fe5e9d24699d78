"""A short, template-based summary of a handed-off conversation, for the agent who takes it.

:func:`summarize` reads the transcript as plain data (``Turn.to_dict()`` dicts) and writes at most
three sentences in the agent's language: what the customer wanted (intents by title, entity values
such as order numbers, a short quote of the last message), what the bot managed and how the customer
feels, and why the chat was handed over. No model is involved: the same input always gives the same
text. Customer text is only ever quoted as a short fragment, so a summary can be logged or shown in
a queue list without repeating a whole message.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from knowledge_index.model import NOT_A_TOPIC, SMALL_TALK_INTENTS, has_cjk

# Longest summary per language; Chinese says more per character.
MAX_CHARS = {"zh": 250, "en": 400}
# Longest run of customer text a summary quotes: never more than 40 characters, fewer for Chinese,
# which packs a whole sentence into 24.
QUOTE_CHARS = {"zh": 24, "en": 40}
ENTITY_CHARS = 24  # an entity value is customer text too: keep it short
MAX_ENTITY_VALUES = 3
ELLIPSIS = "…"


# Chinese titles for the built-in intents and the topics of the knowledge base Baton ships with,
# keyed by the intent's last segment (so ``faq/return_policy`` and ``return_policy`` both match).
# Other knowledge bases pass ``titles``.
_ZH_TITLES = {
    "greet": "问候",
    "goodbye": "道别",
    "thanks": "致谢",
    "affirm": "确认",
    "deny": "否认",
    "human_handoff": "转人工",
    "out_of_scope": "业务范围外的问题",
    "nlu_fallback": "未能识别的问题",
    "order_status": "订单状态",
    "return_request": "退货申请",
    "change_address": "修改地址",
    "complaint": "投诉",
    "delivery_time": "配送时效",
    "shipping_cost": "运费",
    "international_shipping": "国际配送",
    "return_policy": "退货政策",
    "refund_time": "退款时效",
    "exchange": "换货",
    "invoice": "发票",
    "payment_methods": "支付方式",
    "payment_failed": "支付失败",
    "installments": "分期付款",
    "warranty": "保修",
    "membership": "会员权益",
    "points": "积分",
    "coupons": "优惠券",
    "cancel_order": "取消订单",
    "price_protection": "价格保护",
    "reset_password": "重置密码",
    "delete_account": "注销账户",
    "service_hours": "服务时间",
    "store_locations": "门店地址",
    "gift_cards": "礼品卡",
    "restock": "补货",
    "size_guide": "尺码建议",
    "damaged_item": "商品破损",
    "pre_order": "预售",
    "data_privacy": "个人隐私",
    "pickup_point": "自提点",
    "gift_wrapping": "礼品包装",
}
_EN_TITLES = {
    "human_handoff": "talking to a person",
    "out_of_scope": "something outside the shop's scope",
    "nlu_fallback": "an unclear request",
}
# Names of entities and slots (an ``utter_ask_<slot>`` asks for one).
_FIELD_NAMES = {
    "zh": {
        "order_number": "订单号",
        "phone": "手机号",
        "email": "邮箱",
        "amount": "金额",
        "date": "日期",
        "carrier": "快递公司",
        "payment_method": "支付方式",
    },
    "en": {
        "order_number": "order number",
        "phone": "phone number",
        "email": "e-mail",
        "amount": "amount",
        "date": "date",
        "carrier": "carrier",
        "payment_method": "payment method",
    },
}
# Escalation reasons in words.
REASON_TEXT = {
    "zh": {
        "explicit_request": "客户要求人工服务",
        "negative_sentiment": "客户情绪不满",
        "repeated_question": "同一问题反复询问",
        "too_many_turns": "对话轮数过多仍未解决",
        "fallback_streak": "机器人连续未能理解",
        "sensitive_topic": "涉及敏感问题（如投诉）",
    },
    "en": {
        "explicit_request": "the customer asked for a person",
        "negative_sentiment": "the customer is upset",
        "repeated_question": "the same question kept coming back",
        "too_many_turns": "the chat ran long without a resolution",
        "fallback_streak": "the bot failed to understand several times in a row",
        "sensitive_topic": "the topic is sensitive (e.g. a complaint)",
    },
}
_ANGRY_LABELS = frozenset({"angry", "anger", "furious"})
_NEGATIVE_LABELS = frozenset({"negative", "upset", "frustrated", "sad"})
_SCORE_CUT = 0.5  # without a label, a probability above this counts


def _lang(language: str | None) -> str:
    return "zh" if language == "zh" else "en"


def _derived_title(intent: str) -> str:
    return intent.rsplit("/", 1)[-1].replace("_", " ").strip() or intent


def intent_title(intent: str, language: str, titles: Mapping[str, str] | None = None) -> str:
    """A human title for ``intent`` in ``language`` ("zh" or "en"; anything else is English).

    ``titles`` (intent -> title) wins; otherwise a built-in Chinese title for well-known intents, else a
    title derived from the name (``faq/return_policy`` -> ``return policy``).
    """
    if titles and titles.get(intent):
        return titles[intent]
    key = intent.rsplit("/", 1)[-1]
    if _lang(language) == "zh":
        return _ZH_TITLES.get(key) or _ZH_TITLES.get(intent) or _derived_title(intent)
    return _EN_TITLES.get(intent) or _derived_title(intent)


def _field_name(name: str, lang: str) -> str:
    return _FIELD_NAMES[lang].get(name) or name.replace("_", " ")


def _clean(text: Any) -> str:
    """One line of text: control characters and runs of white space become single spaces."""
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in str(text))
    return re.sub(r"\s+", " ", text).strip()


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text`` (plus an ellipsis); Latin text is cut between words."""
    if len(text) <= limit:
        return text
    piece = text[:limit]
    if not has_cjk(piece) and " " in piece[limit // 2 :]:
        piece = piece[: piece.rindex(" ")]
    return piece.rstrip(" ,.;:!?，。；：！？") + ELLIPSIS


def _nlu(turn: Mapping[str, Any]) -> Mapping[str, Any]:
    nlu = turn.get("nlu")
    return nlu if isinstance(nlu, Mapping) else {}


def _mood(sentiment: Any) -> str | None:
    """ "angry", "negative" or None (calm, or unknown) for one turn's sentiment dict."""
    if not isinstance(sentiment, Mapping):
        return None
    label = sentiment.get("label")
    if isinstance(label, str) and label:
        label = label.lower()
        if label in _ANGRY_LABELS:
            return "angry"
        return "negative" if label in _NEGATIVE_LABELS else None
    try:
        anger = float(sentiment.get("anger") or 0.0)
        negative = float(sentiment.get("negative") or 0.0)
    except (TypeError, ValueError):
        return None
    if anger > _SCORE_CUT:
        return "angry"
    return "negative" if negative > _SCORE_CUT else None


@dataclass
class _Facts:
    """What the transcript says, before it is put into words."""

    topics: list[tuple[str, int]]  # intent, how many customer turns had it; most asked first
    entities: list[tuple[str, str]]  # entity, value; first mentioned first
    last_text: str
    answered: list[str]  # intents the bot answered, first answered first
    articles: int
    fallbacks: int
    clarifications: int
    asked: list[str]  # slots the bot asked for
    last_angry: bool
    negative_run: int  # customer turns in a row, up to the last one, that were negative or angry


def _facts(turns: Sequence[Mapping[str, Any]]) -> _Facts:
    counts: Counter[str] = Counter()
    first_seen: dict[str, int] = {}
    entities: dict[tuple[str, str], None] = {}
    answered: dict[str, None] = {}
    asked: dict[str, None] = {}
    moods: list[str | None] = []
    last_text = ""
    articles = fallbacks = clarifications = 0
    for position, turn in enumerate(turns):
        if not isinstance(turn, Mapping):
            continue
        sender, nlu = turn.get("sender"), _nlu(turn)
        if sender == "customer":
            last_text = _clean(turn.get("text") or "")
            intent = nlu.get("intent")
            if isinstance(intent, str) and intent and intent not in NOT_A_TOPIC:
                counts[intent] += 1
                first_seen.setdefault(intent, position)
            for entity in nlu.get("entities") or ():
                if isinstance(entity, Mapping) and entity.get("entity") and entity.get("value"):
                    entities[(str(entity["entity"]), _clean(entity["value"]))] = None
            moods.append(_mood(nlu.get("sentiment")))
        elif sender == "bot":
            action, intent = nlu.get("action"), nlu.get("intent")
            if action == "answer" and isinstance(intent, str) and intent not in SMALL_TALK_INTENTS:
                answered[intent] = None
            elif action == "article":
                articles += 1
            elif action == "fallback":
                fallbacks += 1
            elif action == "clarify":
                clarifications += 1
            elif action == "ask_slot":
                source = str(nlu.get("source") or "")
                asked[source.removeprefix("utter_ask_") if source.startswith("utter_ask_") else "details"] = (
                    None
                )
    run = 0
    for mood in reversed(moods):
        if mood is None:
            break
        run += 1
    return _Facts(
        topics=sorted(counts.items(), key=lambda item: (-item[1], first_seen[item[0]])),
        entities=list(entities),
        last_text=last_text,
        answered=list(answered),
        articles=articles,
        fallbacks=fallbacks,
        clarifications=clarifications,
        asked=list(asked),
        last_angry=bool(moods) and moods[-1] == "angry",
        negative_run=run,
    )


def _join(items: Sequence[str], lang: str) -> str:
    if lang == "zh":
        return "、".join(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True)
class _Detail:
    """How much of each optional part to write; summaries that are too long drop detail step by step."""

    topics: int = 3
    entities: int = MAX_ENTITY_VALUES
    quote: bool = True
    answered_titles: int = 2


_DETAIL_STEPS = (
    _Detail(),
    _Detail(topics=2, entities=2, answered_titles=1),
    _Detail(topics=2, entities=2, quote=False, answered_titles=0),
    _Detail(topics=1, entities=1, quote=False, answered_titles=0),
    _Detail(topics=1, entities=0, quote=False, answered_titles=0),
)


def _wanted(facts: _Facts, lang: str, titles: Mapping[str, str] | None, detail: _Detail) -> str:
    zh = lang == "zh"
    topics = []
    for intent, count in facts.topics[: detail.topics]:
        title = intent_title(intent, lang, titles)
        if count > 1:
            title += f"（{count} 次）" if zh else f" ({count} times)"
        topics.append(title)
    grouped: dict[str, list[str]] = {}  # "order number LM1, LM2" rather than the name twice
    for entity, value in facts.entities[: detail.entities]:
        grouped.setdefault(entity, []).append(_cut(value, ENTITY_CHARS))
    values = [f"{_field_name(e, lang)} {('、' if zh else ', ').join(v)}" for e, v in grouped.items()]
    if topics:
        sentence = (
            ("客户咨询" + _join(topics, lang)) if zh else ("The customer asked about " + _join(topics, lang))
        )
    else:
        sentence = "客户的诉求尚不明确" if zh else "What the customer wants is not clear yet"
    if values:
        sentence += f"（{'，'.join(values)}）" if zh else f" ({'; '.join(values)})"
    if detail.quote and facts.last_text:
        quote = _cut(facts.last_text, QUOTE_CHARS["zh" if has_cjk(facts.last_text) else "en"])
        sentence += f"，最后一条消息：“{quote}”" if zh else f'; last message: "{quote}"'
    return sentence + ("。" if zh else ".")


def _managed(facts: _Facts, lang: str, titles: Mapping[str, str] | None, detail: _Detail) -> str:
    zh = lang == "zh"
    parts: list[str] = []
    if facts.answered:
        shown = [intent_title(i, lang, titles) for i in facts.answered[: detail.answered_titles]]
        if shown and len(shown) == len(facts.answered):
            parts.append(("已解答" + _join(shown, lang)) if zh else ("answered " + _join(shown, lang)))
        else:
            n = len(facts.answered)
            parts.append(f"已解答 {n} 个问题" if zh else f"answered {n} question{'s' * (n != 1)}")
    if facts.articles:
        n = facts.articles
        parts.append(f"推荐了 {n} 篇文章内容" if zh else f"shared {n} article passage{'s' * (n != 1)}")
    if facts.asked:
        names = _join([_field_name(s, lang) for s in facts.asked], lang)
        parts.append(f"询问了{names}" if zh else f"asked for the {names}")
    if facts.clarifications:
        n = facts.clarifications
        parts.append(f"{n} 次请客户澄清" if zh else f"asked the customer to clarify {n} time{'s' * (n != 1)}")
    if facts.fallbacks:
        n = facts.fallbacks
        parts.append(f"{n} 次未能理解" if zh else f"could not understand {n} time{'s' * (n != 1)}")
    if zh:
        bot = "机器人" + "，".join(parts) if parts else "机器人尚未解答任何问题"
    else:
        bot = "The bot " + _join(parts, lang) if parts else "The bot has not answered anything yet"
    mood = _mood_words(facts, lang)
    if mood:
        bot += ("；" if zh else "; ") + mood
    return bot + ("。" if zh else ".")


def _mood_words(facts: _Facts, lang: str) -> str:
    zh = lang == "zh"
    run = facts.negative_run
    if facts.last_angry:
        words = "客户最后一条消息情绪愤怒" if zh else "the customer sounds angry in the last message"
        if run >= 2:
            words += f"，且连续 {run} 条消息情绪负面" if zh else f" and has been negative for the last {run}"
        return words
    if run >= 2:
        return (
            f"客户最近 {run} 条消息情绪负面"
            if zh
            else f"the customer has been negative for the last {run} messages"
        )
    if run == 1:
        return "客户最后一条消息情绪负面" if zh else "the customer sounds unhappy in the last message"
    return ""


def _why(reasons: Sequence[str], lang: str) -> str:
    zh = lang == "zh"
    words = [
        REASON_TEXT[lang].get(r) or r.replace("_", " ")
        for r in dict.fromkeys(reasons)
        if isinstance(r, str) and r
    ]
    if not words:
        return "已转交人工客服。" if zh else "Handed over to an agent."
    return (
        ("转人工原因：" + "；".join(words) + "。")
        if zh
        else ("Handed over because " + _join(words, lang) + ".")
    )


def summarize(
    turns: Sequence[Mapping[str, Any]],
    reasons: Sequence[str],
    language: str,
    titles: Mapping[str, str] | None = None,
) -> str:
    """Summarise a conversation for the agent taking it over.

    Args:
        turns: ``Turn.to_dict()`` dicts in order (customer turns carry the NLU's result, possibly with
            ``sentiment``; bot turns carry ``action``, ``intent`` and ``source``).
        reasons: the escalation reason codes, most important first.
        language: the agent's language, "zh" or "en" (anything else gives English).
        titles: intent -> human title in ``language``; intents not in it get :func:`intent_title`'s.

    Returns:
        At most three sentences (what the customer wanted; what the bot managed and the customer's mood;
        why it was handed over), at most 250 characters in Chinese and 400 in English.
    """
    lang = _lang(language)
    facts = _facts(turns)
    why = _why(reasons, lang)
    separator = "" if lang == "zh" else " "
    text = ""
    for detail in _DETAIL_STEPS:
        text = separator.join(
            (_wanted(facts, lang, titles, detail), _managed(facts, lang, titles, detail), why)
        )
        if len(text) <= MAX_CHARS[lang]:
            return text
    # Only very long titles or many reasons get here: shorten the story, never the reasons.
    detail = _DETAIL_STEPS[-1]
    story = separator.join((_wanted(facts, lang, titles, detail), _managed(facts, lang, titles, detail)))
    room = MAX_CHARS[lang] - len(why) - len(separator) - len(ELLIPSIS)
    if room <= 0:
        return why[: MAX_CHARS[lang] - len(ELLIPSIS)] + ELLIPSIS
    return story[:room].rstrip() + ELLIPSIS + separator + why
