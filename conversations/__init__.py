"""Conversations: the domain model (customer, identity, conversation, turn, states) and its Redis store.

Imports nothing of Baton's other packages: they depend on this one, never the reverse.
"""

from __future__ import annotations

from conversations.keys import DEFAULT_PREFIX, Keys
from conversations.model import ChannelIdentity, Conversation, Customer, Turn
from conversations.redis_server import RedisServer, RedisServerError, find_redis_server
from conversations.states import TRANSITIONS, InvalidTransition, State
from conversations.store import BotSilenced, ConversationNotFound, ConversationStore, CustomerNotFound

__all__ = [
    "DEFAULT_PREFIX",
    "TRANSITIONS",
    "BotSilenced",
    "ChannelIdentity",
    "Conversation",
    "ConversationNotFound",
    "ConversationStore",
    "Customer",
    "CustomerNotFound",
    "InvalidTransition",
    "Keys",
    "RedisServer",
    "RedisServerError",
    "State",
    "Turn",
    "find_redis_server",
]
