"""The domain dataclasses and their JSON form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from conversations.model import (
    ChannelIdentity,
    Conversation,
    Customer,
    Turn,
    format_time,
    from_json,
    parse_time,
    to_json,
)
from conversations.states import State

MOMENT = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)


def test_every_model_round_trips_through_json():
    items = [
        ChannelIdentity("wechat", "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"),
        Customer("c1", tier="vip", display_name="王小明", created_at=MOMENT),
        Conversation(
            "v1",
            "c1",
            "app",
            state=State.QUEUED,
            language="zh",
            created_at=MOMENT,
            updated_at=MOMENT + timedelta(minutes=3),
            handoff_count=1,
            last_reason="negative_sentiment",
        ),
        Turn(
            "t1",
            "v1",
            1,
            "customer",
            "app",
            "zh",
            "什么破服务，气死我了",
            nlu={"intent": {"name": "complain", "confidence": 0.91}, "entities": []},
            client_message_id="msg-9",
            created_at=MOMENT,
            timings={"nlu_ms": 7.25},
        ),
    ]
    for item in items:
        text = to_json(item)
        assert "\\u" not in text  # Chinese stays readable, not escaped
        assert from_json(type(item), text) == item


def test_conversation_state_is_the_enum_even_from_text():
    conversation = Conversation.from_dict(
        {
            "id": "v",
            "customer_id": "c",
            "channel": "web",
            "state": "assigned",
            "language": "",
            "created_at": format_time(MOMENT),
            "updated_at": format_time(MOMENT),
            "handoff_count": "2",
            "last_reason": "",
        }
    )
    assert conversation.state is State.ASSIGNED and conversation.is_open
    assert conversation.language is None and conversation.last_reason is None
    assert conversation.handoff_count == 2


def test_times_are_utc_text_of_fixed_width_that_sorts():
    east = timezone(timedelta(hours=8))
    earlier = format_time(datetime(2026, 5, 1, 16, 0, tzinfo=east))  # 08:00 UTC
    later = format_time(datetime(2026, 5, 1, 8, 0, 0, 1, tzinfo=UTC))
    assert earlier == "2026-05-01T08:00:00.000000+00:00"
    assert earlier < later and len(earlier) == len(later)
    assert parse_time(earlier) == datetime(2026, 5, 1, 8, tzinfo=UTC)


def test_unknown_channels_and_senders_are_refused():
    with pytest.raises(ValueError, match="unknown channel 'sms'"):
        ChannelIdentity("sms", "123")
    with pytest.raises(ValueError, match="external_id"):
        ChannelIdentity("web", "")
    with pytest.raises(ValueError, match="unknown sender 'robot'"):
        Turn("t", "v", 1, "robot", "web", "en", "hi")


def test_turn_json_puts_seq_first():
    turn = Turn("t", "v", 3, "bot", "web", "en", "hi", created_at=MOMENT)
    assert next(iter(json.loads(to_json(turn)))) == "seq"
