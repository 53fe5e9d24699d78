"""The handoff queue: handed-off conversations waiting for an agent, routing, and their lifecycle.

A handoff is one escalation of one conversation (id ``{conversation_id}:{handoff_number}``).
Its life::

    enqueue        new        written once per id, its id added to the handoff stream
    admit          waiting    (an assigner read it from the stream) in the waiting pool by priority;
                              ``ticket`` set when nobody online could take it
    claim          assigned   to one agent, atomically: online, under capacity, still waiting
    transfer_*                to another agent (stays assigned) or back to waiting under a skill
    close          closed     resolved, handed back to the bot, or closed (capacity freed)

Every change is one Lua script (`_SCRIPTS`), so two assigners, or an assigner and an agent
pressing "accept", can never assign one handoff twice or put an agent over capacity. Each
script appends the event to the audit stream and publishes it as JSON on the events channel
in the same step (see `handoff.keys` for every key). Like the conversation store's scripts,
they build some key names from the prefix inside Lua: fine on one Redis (with or without
Sentinel); Redis Cluster would need hash tags first.

The conversation's own state (``queued`` / ``assigned``) lives in the conversation store and
moves right after the script, through `ConversationStore.transition`. A crash in between
leaves the two disagreeing; `HandoffQueue.reconcile` finishes that work.

Priority is a virtual arrival time: ``created_at - vip_priority_seconds * vip -
severity_priority_seconds * severity``, lower first, ties older first. A handoff whose skill
(and language) no online agent has simply waits; it is not widened to another skill.

Routing (``routing``): ``assign`` (the default) pushes each waiting handoff to the best online
agent with room (`match`); ``broadcast`` leaves them waiting for an agent with the skill to
accept one (`claim`), as contact centres do where agents pick their chats.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from conversations.redis_client import RedisClientHolder
from conversations.states import InvalidTransition, State
from conversations.store import ConversationNotFound, ConversationStore
from handoff.agents import AgentDirectory
from handoff.keys import DEFAULT_PREFIX, GROUP, HandoffKeys

if TYPE_CHECKING:
    from knowledge_index.handoff_file import HandoffConfig

log = logging.getLogger(__name__)

Status = Literal["new", "waiting", "assigned", "closed"]
Outcome = Literal["resolved", "handback", "closed"]
Routing = Literal["assign", "broadcast"]
ROUTINGS: tuple[Routing, ...] = ("assign", "broadcast")
OUTCOMES: tuple[str, ...] = ("resolved", "handback", "closed")

# A hook called at named points of an assignment ("before_claim", "after_claim_script"); only
# fault tests set one, to stop a worker half-way.
Pause = Callable[[str], Awaitable[None]]
# A callback given a handoff: `HandoffQueue.on_assigned`, `HandoffQueue.on_breach`.
HandoffHook = Callable[["Handoff"], Awaitable[Any]]

# The pub/sub channel of every handoff and agent event (`HandoffKeys.events`), by prefix.
HANDOFF_EVENTS = "{prefix}handoff:events"


@dataclass(frozen=True)
class HandoffRequest:
    """What the turn pipeline knows when it hands a conversation to a person."""

    conversation_id: str
    customer_id: str
    channel: str
    language: str  # "zh" or "en"; "" lets any agent take it
    skill: str
    reasons: tuple[str, ...]
    severity: int  # 1 (low) to 3 (high)
    vip: bool
    summary: str = ""

    def __post_init__(self) -> None:
        if not 1 <= self.severity <= 3:
            raise ValueError("severity must be 1, 2 or 3")
        if not self.skill:
            raise ValueError("a handoff needs a skill")
        object.__setattr__(self, "reasons", tuple(self.reasons))


def _opt_float(text: str | None) -> float | None:
    return float(text) if text else None


@dataclass(frozen=True)
class Handoff:
    """One escalation of one conversation, as the queue keeps it. Times are epoch seconds."""

    id: str
    conversation_id: str
    handoff_number: int
    customer_id: str
    channel: str
    language: str
    skill: str
    reasons: tuple[str, ...]
    severity: int
    vip: bool
    summary: str
    status: Status
    priority: float
    created_at: float
    agent_id: str | None = None
    ticket: bool = False
    assigned_at: float | None = None  # when the current agent got it
    first_response_at: float | None = None
    closed_at: float | None = None
    outcome: Outcome | None = None
    breached: bool = False
    transfers: int = 0
    updated_at: float = field(default=0.0)

    @property
    def is_open(self) -> bool:
        """True until closed."""
        return self.status != "closed"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; the events carry the same shape under ``handoff``."""
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "handoff_number": self.handoff_number,
            "customer_id": self.customer_id,
            "channel": self.channel,
            "language": self.language,
            "skill": self.skill,
            "reasons": list(self.reasons),
            "severity": self.severity,
            "vip": self.vip,
            "summary": self.summary,
            "status": self.status,
            "agent_id": self.agent_id,
            "ticket": self.ticket,
            "priority": self.priority,
            "created_at": self.created_at,
            "assigned_at": self.assigned_at,
            "first_response_at": self.first_response_at,
            "closed_at": self.closed_at,
            "outcome": self.outcome,
            "breached": self.breached,
            "transfers": self.transfers,
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of `to_dict` (also reads the ``handoff`` of a published event)."""

        def opt(name: str) -> float | None:
            value = data.get(name)
            return None if value is None else float(value)

        return cls(
            id=data["id"],
            conversation_id=data["conversation_id"],
            handoff_number=int(data["handoff_number"]),
            customer_id=data["customer_id"],
            channel=data["channel"],
            language=data.get("language") or "",
            skill=data["skill"],
            reasons=tuple(data.get("reasons") or ()),
            severity=int(data["severity"]),
            vip=bool(data.get("vip")),
            summary=data.get("summary") or "",
            status=data["status"],
            priority=float(data["priority"]),
            created_at=float(data["created_at"]),
            agent_id=data.get("agent_id") or None,
            ticket=bool(data.get("ticket")),
            assigned_at=opt("assigned_at"),
            first_response_at=opt("first_response_at"),
            closed_at=opt("closed_at"),
            outcome=data.get("outcome") or None,
            breached=bool(data.get("breached")),
            transfers=int(data.get("transfers") or 0),
            updated_at=float(data.get("updated_at") or data["created_at"]),
        )

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> Self:
        """Read the all-text Redis hash."""
        return cls(
            id=data["id"],
            conversation_id=data["conversation_id"],
            handoff_number=int(data["handoff_number"]),
            customer_id=data["customer_id"],
            channel=data["channel"],
            language=data.get("language", ""),
            skill=data["skill"],
            reasons=tuple(_json_list(data.get("reasons", "[]"))),
            severity=int(data["severity"]),
            vip=data.get("vip") == "1",
            summary=data.get("summary", ""),
            status=data["status"],  # type: ignore[arg-type]  # written only by the scripts
            priority=float(data["priority"]),
            created_at=float(data["created_at"]),
            agent_id=data.get("agent_id") or None,
            ticket=data.get("ticket") == "1",
            assigned_at=_opt_float(data.get("assigned_at")),
            first_response_at=_opt_float(data.get("first_response_at")),
            closed_at=_opt_float(data.get("closed_at")),
            outcome=data.get("outcome") or None,  # type: ignore[arg-type]
            breached=data.get("breached") == "1",
            transfers=int(data.get("transfers") or 0),
            updated_at=float(data.get("updated_at") or data["created_at"]),
        )


def _json_list(text: str) -> list[str]:
    value = json.loads(text)
    return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class ClaimResult:
    """The outcome of `HandoffQueue.claim` and the transfers.

    ``reason`` when not ok: ``not_waiting`` (taken, closed, or its conversation is gone),
    ``agent_offline``, ``at_capacity``, ``unknown`` (no such handoff), ``unknown_agent``;
    transfers also ``not_assigned``, ``same_agent`` and ``closed``.
    """

    ok: bool
    reason: str | None = None
    handoff: Handoff | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class QueueStanding:
    """Where a waiting handoff stands; every field None when it is not waiting.

    ``estimated_seconds`` is also None while no agent who could take it is online.
    """

    position: int | None  # 1 = next among the handoffs of its skill
    waiting: int | None  # handoffs of its skill waiting now
    agents_online: int | None  # online agents with its skill and language
    estimated_seconds: int | None

    def to_dict(self) -> dict[str, int | None]:
        """A JSON-ready dict."""
        return {
            "position": self.position,
            "waiting": self.waiting,
            "agents_online": self.agents_online,
            "estimated_seconds": self.estimated_seconds,
        }


# -- Lua -----------------------------------------------------------------------------------------
# Every script takes ARGV[1] the prefix, ARGV[2] the time (epoch seconds as text), ARGV[3] the
# audit stream's cap; its own arguments follow. Floats go back to Python as text: Redis would
# truncate a Lua number to an integer.

_PREAMBLE = """
local P, NOW, AUDIT_MAX = ARGV[1], ARGV[2], ARGV[3]
local EVENTS, AUDIT = P .. 'handoff:events', P .. 'handoffs:audit'

local function hkey(id) return P .. 'handoff:' .. id end
local function chats_key(agent) return P .. 'agent:' .. agent .. ':chats' end
local function waiting_key(skill)
  if skill then return P .. 'handoffs:waiting:' .. skill end
  return P .. 'handoffs:waiting'
end

-- The handoff hash as a Lua table, or nil.
local function load(id)
  local flat = redis.call('HGETALL', hkey(id))
  if #flat == 0 then return nil end
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- HSET name, value, ... and keep the table in step.
local function set(h, ...)
  local args = {...}
  for i = 1, #args, 2 do h[args[i]] = args[i + 1] end
  redis.call('HSET', hkey(h.id), unpack(args))
end

local function opt_text(v) if v == nil or v == '' then return cjson.null end return v end
local function opt_number(v) if v == nil or v == '' then return cjson.null end return tonumber(v) end

-- The same shape as Handoff.to_dict.
local function as_table(h)
  return {
    id = h.id, conversation_id = h.conversation_id, handoff_number = tonumber(h.handoff_number),
    customer_id = h.customer_id, channel = h.channel, language = h.language or '', skill = h.skill,
    reasons = cjson.decode(h.reasons or '[]'), severity = tonumber(h.severity), vip = h.vip == '1',
    summary = h.summary or '', status = h.status, agent_id = opt_text(h.agent_id),
    ticket = h.ticket == '1', priority = tonumber(h.priority), created_at = tonumber(h.created_at),
    assigned_at = opt_number(h.assigned_at), first_response_at = opt_number(h.first_response_at),
    closed_at = opt_number(h.closed_at), outcome = opt_text(h.outcome), breached = h.breached == '1',
    transfers = tonumber(h.transfers or '0'), updated_at = tonumber(h.updated_at or h.created_at),
  }
end

local function unwait(h)
  redis.call('ZREM', waiting_key(nil), h.id)
  redis.call('ZREM', waiting_key(h.skill), h.id)
  redis.call('ZREM', P .. 'handoffs:tickets', h.id)
end

-- Append the event to the audit stream and publish it as JSON. extra: {name, value, ...} text.
local function emit(kind, h, extra)
  extra = extra or {}
  local fields = {'type', kind, 'handoff_id', h.id, 'conversation_id', h.conversation_id,
    'agent_id', h.agent_id or '', 'at', NOW}
  for i = 1, #extra do fields[#fields + 1] = extra[i] end
  redis.call('XADD', AUDIT, 'MAXLEN', '~', AUDIT_MAX, '*', unpack(fields))
  local payload = {type = kind, handoff_id = h.id, conversation_id = h.conversation_id,
    agent_id = opt_text(h.agent_id), at = tonumber(NOW), handoff = as_table(h)}
  for i = 1, #extra, 2 do payload[extra[i]] = opt_text(extra[i + 1]) end
  -- This cjson writes an empty table as {}; reasons is the one list. Inside a JSON string a
  -- quote is always escaped, so this text can only be the key itself.
  local text = string.gsub(cjson.encode(payload), '"reasons":{}', '"reasons":[]')
  redis.call('PUBLISH', EVENTS, text)
end

-- True if the agent has the skill and speaks the language (an empty language matches anyone).
local function serves(agent, skill, language)
  local skills, languages = unpack(redis.call('HMGET', P .. 'agent:' .. agent, 'skills', 'languages'))
  if not skills then return false end
  local has_skill, speaks = false, language == nil or language == ''
  for _, s in ipairs(cjson.decode(skills)) do if s == skill then has_skill = true end end
  for _, l in ipairs(cjson.decode(languages or '[]')) do if l == language then speaks = true end end
  return has_skill and speaks
end

-- nil if the agent may take one more chat now, else the reason why not.
local function refuse_agent(agent)
  local max_chats = redis.call('HGET', P .. 'agent:' .. agent, 'max_chats')
  if not max_chats then return 'unknown_agent' end
  if redis.call('SISMEMBER', P .. 'agents:online', agent) == 0 then return 'agent_offline' end
  if redis.call('SCARD', chats_key(agent)) >= tonumber(max_chats) then return 'at_capacity' end
  return nil
end
"""

# ARGV[4] handoff id, ARGV[5] conversation id, ARGV[6] handoff number, ARGV[7] created_at,
# ARGV[8...] the hash as field, value pairs.
_ENQUEUE = """
local id = ARGV[4]
if redis.call('EXISTS', hkey(id)) == 1 then return {'existing', redis.call('HGETALL', hkey(id))} end
redis.call('HSET', hkey(id), unpack(ARGV, 8))
redis.call('ZADD', P .. 'handoffs:conv:' .. ARGV[5], ARGV[6], id)
redis.call('ZADD', P .. 'handoffs:open', ARGV[7], id)
redis.call('ZADD', P .. 'handoffs:unanswered', ARGV[7], id)
redis.call('XADD', P .. 'handoffs:stream', '*', 'handoff_id', id)
emit('queued', load(id))
return {'created', redis.call('HGETALL', hkey(id))}
"""

# ARGV[4] handoff id.
_ADMIT = """
local h = load(ARGV[4])
if not h then return {'missing'} end
if h.status ~= 'new' then return {'unchanged', redis.call('HGETALL', hkey(h.id))} end
local ticket = '1'
for _, agent in ipairs(redis.call('SMEMBERS', P .. 'agents:online')) do
  if serves(agent, h.skill, h.language) then ticket = '0' break end
end
set(h, 'status', 'waiting', 'ticket', ticket, 'updated_at', NOW)
redis.call('ZADD', waiting_key(nil), h.priority, h.id)
redis.call('ZADD', waiting_key(h.skill), h.priority, h.id)
if ticket == '1' then redis.call('ZADD', P .. 'handoffs:tickets', h.created_at, h.id) end
emit('admitted', h)
return {'admitted', redis.call('HGETALL', hkey(h.id))}
"""

# ARGV[4] handoff id, ARGV[5] agent id.
_CLAIM = """
local h, agent = load(ARGV[4]), ARGV[5]
if not h then return {'unknown'} end
if h.status ~= 'waiting' then return {'not_waiting'} end
local refused = refuse_agent(agent)
if refused then return {refused} end
unwait(h)
set(h, 'status', 'assigned', 'agent_id', agent, 'assigned_at', NOW, 'updated_at', NOW)
redis.call('SADD', chats_key(agent), h.id)
redis.call('ZADD', P .. 'agents:last_assigned', NOW, agent)
emit('assigned', h)
return {'ok', redis.call('HGETALL', hkey(h.id))}
"""

# ARGV[4] handoff id, ARGV[5] outcome.
_CLOSE = """
local h = load(ARGV[4])
if not h then return {'missing'} end
if h.status == 'closed' then return {'unchanged', redis.call('HGETALL', hkey(h.id))} end
if h.agent_id and h.agent_id ~= '' then redis.call('SREM', chats_key(h.agent_id), h.id) end
unwait(h)
redis.call('ZREM', P .. 'handoffs:open', h.id)
redis.call('ZREM', P .. 'handoffs:unanswered', h.id)
set(h, 'status', 'closed', 'closed_at', NOW, 'outcome', ARGV[5], 'updated_at', NOW)
emit('closed', h)
return {'closed', redis.call('HGETALL', hkey(h.id))}
"""

# ARGV[4] handoff id, ARGV[5] the agent it goes to.
_TRANSFER_AGENT = """
local h, agent = load(ARGV[4]), ARGV[5]
if not h then return {'unknown'} end
if h.status ~= 'assigned' then return {'not_assigned'} end
if h.agent_id == agent then return {'same_agent'} end
local refused = refuse_agent(agent)
if refused then return {refused} end
local from = h.agent_id
redis.call('SREM', chats_key(from), h.id)
redis.call('SADD', chats_key(agent), h.id)
redis.call('ZADD', P .. 'agents:last_assigned', NOW, agent)
set(h, 'agent_id', agent, 'assigned_at', NOW, 'transfers', tostring(tonumber(h.transfers or '0') + 1),
  'updated_at', NOW)
emit('transferred', h, {'from_agent_id', from, 'from_skill', h.skill})
return {'ok', redis.call('HGETALL', hkey(h.id))}
"""

# ARGV[4] handoff id, ARGV[5] the skill whose queue it goes to. A new handoff keeps status new
# (admission puts it under the new skill); a waiting or assigned one waits under the new skill
# with its old priority: the customer has waited already.
_TRANSFER_SKILL = """
local h, skill = load(ARGV[4]), ARGV[5]
if not h then return {'unknown'} end
if h.status == 'closed' then return {'closed'} end
local before, from_agent, from_skill = h.status, h.agent_id or '', h.skill
if from_agent ~= '' then redis.call('SREM', chats_key(from_agent), h.id) end
unwait(h)
local status = before == 'new' and 'new' or 'waiting'
set(h, 'status', status, 'skill', skill, 'agent_id', '', 'transfers',
  tostring(tonumber(h.transfers or '0') + 1), 'updated_at', NOW)
if status == 'waiting' then
  redis.call('ZADD', waiting_key(nil), h.priority, h.id)
  redis.call('ZADD', waiting_key(skill), h.priority, h.id)
end
emit('transferred', h, {'from_agent_id', from_agent, 'from_skill', from_skill})
return {'ok', before, redis.call('HGETALL', hkey(h.id))}
"""

# ARGV[4] handoff id.
_FIRST_RESPONSE = """
local h = load(ARGV[4])
if not h then return {'missing'} end
if h.first_response_at and h.first_response_at ~= '' then return {'already'} end
set(h, 'first_response_at', NOW, 'updated_at', NOW)
redis.call('ZREM', P .. 'handoffs:unanswered', h.id)
emit('first_response', h)
return {'ok', tostring(tonumber(NOW) - tonumber(h.created_at))}
"""

# ARGV[4] cutoff (created before it and unanswered = breached), ARGV[5] at most this many.
_BREACHES = """
local out = {}
local ids = redis.call('ZRANGEBYSCORE', P .. 'handoffs:unanswered', '-inf', ARGV[4], 'LIMIT', 0, ARGV[5])
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'handoffs:unanswered', id)
  local h = load(id)
  if h and h.status ~= 'closed' and (h.first_response_at or '') == '' and h.breached ~= '1' then
    set(h, 'breached', '1', 'updated_at', NOW)
    emit('breach', h)
    out[#out + 1] = redis.call('HGETALL', hkey(id))
  end
end
return out
"""

# No arguments of its own: drop from each agent's chat set what is no longer assigned to them.
_RECONCILE_CHATS = """
local removed = 0
for _, agent in ipairs(redis.call('SMEMBERS', P .. 'agents')) do
  for _, id in ipairs(redis.call('SMEMBERS', chats_key(agent))) do
    local status, owner = unpack(redis.call('HMGET', hkey(id), 'status', 'agent_id'))
    if status ~= 'assigned' or owner ~= agent then
      redis.call('SREM', chats_key(agent), id)
      removed = removed + 1
    end
  end
end
return removed
"""


def _as_dict(flat: Sequence[str]) -> dict[str, str]:
    """An HGETALL reply given as a flat [field, value, ...] array."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _sort_key(handoff: Handoff) -> tuple[float, float, str]:
    """Priority order: lower score first, ties older first."""
    return (handoff.priority, handoff.created_at, handoff.id)


class HandoffQueue(RedisClientHolder):
    """Handoffs in Redis: enqueue, admit, route, claim, transfer, close; events for the API.

    Args:
        client: a ``redis.asyncio.Redis`` made with ``decode_responses=True``.
        store: the conversation store to move states with (made on ``client`` if None).
        prefix: put before every key; the same as the conversation store's.
        config: a knowledge base's escalation settings; when given, its four timing settings
            replace the keywords below.
        vip_priority_seconds: a VIP is served as if they had waited this much longer.
        severity_priority_seconds: each level of severity counts as this much longer waiting.
        average_handle_seconds: how long an agent spends on a chat, for the wait estimate.
        first_response_seconds: an agent should answer within this long of the handoff.
        audit_maxlen: about how many events the audit stream keeps.
        routing: ``assign`` (push waiting handoffs to agents) or ``broadcast`` (agents accept them).
        owns_client: close ``client`` in `aclose`.
    """

    def __init__(
        self,
        client: Redis,
        store: ConversationStore | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        config: HandoffConfig | None = None,
        vip_priority_seconds: float = 300,
        severity_priority_seconds: float = 60,
        average_handle_seconds: float = 240,
        first_response_seconds: float = 30,
        audit_maxlen: int = 100_000,
        routing: Routing = "assign",
        owns_client: bool = False,
    ) -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, not {routing!r}")
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.client = client
        self._owns_client = owns_client
        self.keys = HandoffKeys(prefix)
        self.store = store if store is not None else ConversationStore(client, prefix=prefix)
        self.agents = AgentDirectory(client, prefix)
        if config is not None:  # a knowledge base's handoff.yml wins over the keyword defaults
            vip_priority_seconds = config.vip_priority_seconds
            severity_priority_seconds = config.severity_priority_seconds
            average_handle_seconds = config.average_handle_seconds
            first_response_seconds = config.first_response_seconds
        self.vip_priority_seconds = vip_priority_seconds
        self.severity_priority_seconds = severity_priority_seconds
        self.average_handle_seconds = average_handle_seconds
        self.first_response_seconds = first_response_seconds
        self.audit_maxlen = audit_maxlen
        self.routing = routing
        # Called once per successful claim, in the process that made it (after the conversation
        # moved), and once per breach found by check_breaches: e.g. tell the customer, count.
        self.on_assigned: HandoffHook | None = None
        self.on_breach: HandoffHook | None = None
        self.pause: Pause | None = None  # fault tests only: see `Pause`
        self._group_ready = False

        def script(body: str) -> Any:
            return client.register_script(_PREAMBLE + body)

        self._enqueue = script(_ENQUEUE)
        self._admit = script(_ADMIT)
        self._claim = script(_CLAIM)
        self._close = script(_CLOSE)
        self._transfer_agent = script(_TRANSFER_AGENT)
        self._transfer_skill = script(_TRANSFER_SKILL)
        self._first_response = script(_FIRST_RESPONSE)
        self._breaches = script(_BREACHES)
        self._reconcile_chats = script(_RECONCILE_CHATS)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, **settings: Any) -> Self:
        """A queue with its own client for ``url``; ``settings`` as for the constructor."""
        client = Redis.from_url(url, decode_responses=True)
        return cls(client, prefix=prefix, owns_client=True, **settings)

    # -- the stream ---------------------------------------------------------------------------

    async def ensure_group(self) -> None:
        """Create the assigners' consumer group (and the stream) if missing.

        The group starts at id 0, so entries added before it existed are still delivered.
        """
        if self._group_ready:
            return
        try:
            await self.client.xgroup_create(self.keys.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def forget_group(self) -> None:
        """Make the next `ensure_group` ask Redis again (after a NOGROUP error)."""
        self._group_ready = False

    # -- writes -------------------------------------------------------------------------------

    def priority_of(self, created_at: float, vip: bool, severity: int) -> float:
        """The virtual arrival time: lower is served first."""
        return created_at - self.vip_priority_seconds * int(vip) - self.severity_priority_seconds * severity

    async def enqueue(self, request: HandoffRequest, handoff_number: int) -> Handoff:
        """Add a handoff and announce it on the stream; a second call with the same number changes nothing.

        Call it after the conversation moved ``bot -> queued``, with the conversation's
        ``handoff_count`` from that transition as ``handoff_number``; retrying is safe.

        Returns:
            The handoff (the existing one on a retry).
        """
        if handoff_number < 1:
            raise ValueError("handoff_number starts at 1 (the conversation's handoff_count)")
        await self.ensure_group()
        now = time.time()
        handoff_id = f"{request.conversation_id}:{handoff_number}"
        record = {
            "id": handoff_id,
            "conversation_id": request.conversation_id,
            "handoff_number": str(handoff_number),
            "customer_id": request.customer_id,
            "channel": request.channel,
            "language": request.language or "",
            "skill": request.skill,
            "reasons": json.dumps(list(request.reasons), ensure_ascii=False),
            "severity": str(request.severity),
            "vip": "1" if request.vip else "0",
            "summary": request.summary,
            "status": "new",
            "agent_id": "",
            "ticket": "0",
            "priority": repr(self.priority_of(now, request.vip, request.severity)),
            "created_at": repr(now),
            "updated_at": repr(now),
            "breached": "0",
            "transfers": "0",
        }
        _outcome, flat = await self._enqueue(
            args=[
                *self._common(now),
                handoff_id,
                request.conversation_id,
                handoff_number,
                repr(now),
                *(item for pair in record.items() for item in pair),
            ]
        )
        return Handoff.from_hash(_as_dict(flat))

    async def admit(self, handoff_id: str) -> Handoff | None:
        """new -> waiting (nothing if it is past new); sets ``ticket`` when nobody online could take it.

        Returns:
            The handoff, or None if unknown.
        """
        reply = await self._admit(args=[*self._common(), handoff_id])
        return Handoff.from_hash(_as_dict(reply[1])) if reply[0] != "missing" else None

    async def claim(self, handoff_id: str, agent_id: str) -> ClaimResult:
        """Assign a waiting handoff to an agent, atomically; then move the conversation to assigned.

        The script checks that the handoff is waiting, the agent online and under
        ``max_chats``; skills and languages are the caller's business (`match` checks them,
        the API checks them for a manual accept). If the conversation turns out resolved
        (or back with the bot) meanwhile, the handoff is closed and the result is
        ``not_waiting``.
        """
        reply = await self._claim(args=[*self._common(), handoff_id, agent_id])
        if reply[0] != "ok":
            return ClaimResult(False, reply[0])
        handoff = Handoff.from_hash(_as_dict(reply[1]))
        if self.pause is not None:
            await self.pause("after_claim_script")
        state = await self._move(
            handoff.conversation_id, State.QUEUED, State.ASSIGNED, f"assigned:{agent_id}"
        )
        if state in (State.RESOLVED, State.BOT, None):
            # Nobody is waiting any more: free the agent at once instead of leaving a dead chat.
            log.info("handoff %s: conversation is %s, closing instead of assigning", handoff_id, state)
            await self.close(handoff_id, "closed")
            return ClaimResult(False, "not_waiting", await self.get(handoff_id))
        await self._call(self.on_assigned, handoff)
        return ClaimResult(True, None, handoff)

    async def close(self, handoff_id: str, outcome: Outcome | str) -> Handoff | None:
        """Close the handoff (``resolved``, ``handback`` or ``closed``); frees the agent; idempotent.

        Move the conversation first (``assigned -> resolved``, ``assigned -> bot``,
        ``queued -> resolved``), then call this. A second close keeps the first outcome.

        Returns:
            The handoff, or None if unknown.
        """
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}")
        reply = await self._close(args=[*self._common(), handoff_id, outcome])
        return Handoff.from_hash(_as_dict(reply[1])) if reply[0] != "missing" else None

    async def transfer_to_agent(self, handoff_id: str, to_agent_id: str) -> ClaimResult:
        """Move an assigned handoff to another agent (online, under capacity); ``transfers`` += 1."""
        reply = await self._transfer_agent(args=[*self._common(), handoff_id, to_agent_id])
        if reply[0] != "ok":
            return ClaimResult(False, reply[0])
        return ClaimResult(True, None, Handoff.from_hash(_as_dict(reply[1])))

    async def transfer_to_skill(self, handoff_id: str, skill: str) -> ClaimResult:
        """Put the handoff back to waiting under ``skill`` (its agent freed); ``transfers`` += 1.

        It keeps its priority. An assigned one's conversation moves ``assigned -> queued``.
        """
        if not skill:
            raise ValueError("a skill must not be empty")
        reply = await self._transfer_skill(args=[*self._common(), handoff_id, skill])
        if reply[0] != "ok":
            return ClaimResult(False, reply[0])
        before, flat = reply[1], reply[2]
        handoff = Handoff.from_hash(_as_dict(flat))
        if before == "assigned":
            await self._move(handoff.conversation_id, State.ASSIGNED, State.QUEUED, f"transfer:{skill}")
        return ClaimResult(True, None, handoff)

    async def record_first_response(self, handoff_id: str) -> float | None:
        """Note the agent's first message; seconds since the handoff, or None if noted before (or unknown)."""
        reply = await self._first_response(args=[*self._common(), handoff_id])
        return float(reply[1]) if reply[0] == "ok" else None

    async def check_breaches(self, now: float | None = None, limit: int = 100) -> list[Handoff]:
        """Mark handoffs unanswered for longer than ``first_response_seconds`` as breached.

        Each handoff is returned (and its ``breach`` event published) once only, whoever calls.
        ``now`` (epoch seconds) defaults to the clock.
        """
        cutoff = (time.time() if now is None else now) - self.first_response_seconds
        flats = await self._breaches(args=[*self._common(), repr(cutoff), limit])
        breached = [Handoff.from_hash(_as_dict(flat)) for flat in flats]
        for handoff in breached:
            await self._call(self.on_breach, handoff)
        return breached

    async def publish(self, event: dict[str, Any]) -> None:
        """Publish another event (a note, say) on the handoff events channel; ``at`` is added if missing."""
        payload = {"at": time.time(), **event}
        await self.client.publish(self.keys.events, json.dumps(payload, ensure_ascii=False))

    # -- routing -----------------------------------------------------------------------------

    async def match(self, limit: int = 200) -> list[Handoff]:
        """Assign waiting handoffs, best priority first, to online agents who can take them.

        An agent qualifies with the handoff's skill and language and a free slot; of those the
        least loaded wins, ties to the one whose last assignment is oldest. Every assignment
        goes through `claim`, so concurrent matchers never double-assign nor overfill.
        ``limit`` bounds how many waiting handoffs one call looks at.

        Returns:
            The handoffs this call assigned (none under ``broadcast`` routing).
        """
        if self.routing == "broadcast":
            return []
        agents = [agent for agent in await self.agents.online() if agent.max_chats > 0]
        if not agents:
            return []
        ids = [agent.id for agent in agents]
        loads = await self.agents.loads(ids)
        scores = await self.client.zmscore(self.keys.last_assigned, ids)
        last = {agent_id: score or 0.0 for agent_id, score in zip(ids, scores, strict=True)}
        free = {agent.id: agent.max_chats - loads[agent.id] for agent in agents}
        assigned: list[Handoff] = []
        for handoff in await self.waiting(limit=limit):
            if not any(slots > 0 for slots in free.values()):
                break
            for _ in range(len(agents)):  # at most one try per agent
                candidates = [
                    agent
                    for agent in agents
                    if free[agent.id] > 0 and agent.can_serve(handoff.skill, handoff.language)
                ]
                if not candidates:
                    break
                best = min(candidates, key=lambda agent: (loads[agent.id], last[agent.id], agent.id))
                if self.pause is not None:
                    await self.pause("before_claim")
                result = await self.claim(handoff.id, best.id)
                if result.ok and result.handoff is not None:
                    assigned.append(result.handoff)
                    loads[best.id] += 1
                    free[best.id] -= 1
                    last[best.id] = result.handoff.assigned_at or time.time()
                    break
                if result.reason in ("at_capacity", "agent_offline", "unknown_agent"):
                    # Someone else filled this agent, or they left: offer the handoff to the next one.
                    free[best.id] = 0
                    continue
                break  # not_waiting / unknown: another worker took it, or it was closed
        return assigned

    # -- reads -------------------------------------------------------------------------------

    async def get(self, handoff_id: str) -> Handoff | None:
        """The handoff, or None."""
        data = await self.client.hgetall(self.keys.handoff(handoff_id))
        return Handoff.from_hash(data) if data else None

    async def for_conversation(self, conversation_id: str) -> Handoff | None:
        """The conversation's latest handoff, or None."""
        ids = await self.client.zrange(self.keys.by_conversation(conversation_id), -1, -1)
        return await self.get(ids[0]) if ids else None

    async def waiting(self, skills: set[str] | None = None, limit: int = 100) -> list[Handoff]:
        """Waiting handoffs (of any of ``skills``, or all), best priority first, at most ``limit``."""
        if limit < 1:
            return []
        keys = [self.keys.waiting()] if skills is None else [self.keys.waiting(s) for s in sorted(skills)]
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.zrange(key, 0, limit - 1)
            replies = await pipe.execute()
        ids = {handoff_id for reply in replies for handoff_id in reply}
        handoffs = [h for h in await self._many(ids) if h.status == "waiting"]
        return sorted(handoffs, key=_sort_key)[:limit]

    async def assigned_to(self, agent_id: str) -> list[Handoff]:
        """The handoffs the agent holds now, oldest assignment first."""
        handoffs = await self._many(await self.client.smembers(self.keys.chats(agent_id)))
        mine = [h for h in handoffs if h.status == "assigned" and h.agent_id == agent_id]
        return sorted(mine, key=lambda h: (h.assigned_at or 0.0, h.id))

    async def tickets(self) -> list[Handoff]:
        """Left messages: waiting handoffs admitted while nobody who could take them was online, oldest first."""
        handoffs = await self._many(await self.client.zrange(self.keys.tickets, 0, -1))
        return [h for h in handoffs if h.status == "waiting"]

    async def standing(self, handoff_id: str) -> QueueStanding:
        """Where a waiting handoff stands among those of its skill, and about how long it will wait.

        The estimate is 0 while an agent who could take it has a free slot for it; otherwise
        the chats ahead of it beyond the free slots, times ``average_handle_seconds``, shared
        by the slots of the online agents with the skill and language.
        """
        handoff = await self.get(handoff_id)
        nothing = QueueStanding(None, None, None, None)
        if handoff is None or handoff.status != "waiting":
            return nothing
        key = self.keys.waiting(handoff.skill)
        score = await self.client.zscore(key, handoff_id)
        if score is None:  # claimed or closed since the read above
            return nothing
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zcount(key, "-inf", f"({score!r}")
            pipe.zrangebyscore(key, score, score)
            pipe.zcard(key)
            ahead, tied, waiting = await pipe.execute()
        # Equal scores: the older one goes first, as in `match`.
        ahead += sum(1 for h in await self._many(tied) if _sort_key(h) < _sort_key(handoff))
        position = ahead + 1
        servers = [a for a in await self.agents.online() if a.can_serve(handoff.skill, handoff.language)]
        loads = await self.agents.loads([a.id for a in servers])
        capacity = sum(a.max_chats for a in servers)
        free = sum(max(0, a.max_chats - loads[a.id]) for a in servers)
        if capacity == 0:
            estimate = None
        elif free >= position:
            estimate = 0
        else:
            estimate = math.ceil((position - free) * self.average_handle_seconds / capacity)
        return QueueStanding(position, int(waiting), len(servers), estimate)

    # -- repair ------------------------------------------------------------------------------

    async def reconcile(self, min_age_seconds: float = 0.0) -> int:
        """Finish work a crash left half done; safe any time, idempotent. Returns how many repairs.

        - an agent's chat set holding a handoff no longer assigned to them: removed;
        - an assigned handoff whose conversation is still queued: the conversation moves to assigned;
        - a waiting handoff whose conversation is still assigned (a transfer to a skill cut
          short): the conversation moves to queued;
        - an open handoff whose conversation is resolved, back with the bot, gone, or escalated
          again since: closed (``resolved``, ``handback`` or ``closed``).

        Handoffs (or conversations) changed less than ``min_age_seconds`` ago are left alone,
        so a periodic run does not race work still in flight.
        """
        repairs = int(await self._reconcile_chats(args=self._common()))
        cutoff = time.time() - min_age_seconds
        ids = await self.client.zrange(self.keys.open, 0, -1)
        for start in range(0, len(ids), 200):
            for handoff_id in ids[start : start + 200]:
                repairs += await self._reconcile_one(handoff_id, cutoff)
        return repairs

    async def _reconcile_one(self, handoff_id: str, cutoff: float) -> int:
        before = await self.get(handoff_id)
        if before is None or not before.is_open:
            await self.client.zrem(self.keys.open, handoff_id)
            return 0
        if before.updated_at > cutoff:
            return 0
        # The conversation first, then the handoff afresh: each handoff change happens before
        # its conversation's, so this order sees the handoff at least as new as the conversation.
        conversation = await self.store.get_conversation(before.conversation_id)
        handoff = await self.get(handoff_id)
        if handoff is None or not handoff.is_open:
            return 0
        if conversation is not None and conversation.updated_at.timestamp() > cutoff:
            return 0  # the conversation just changed: its caller may be about to update the handoff
        if conversation is None or conversation.handoff_count > handoff.handoff_number:
            await self.close(handoff_id, "closed")
            return 1
        if conversation.state in (State.RESOLVED, State.BOT):
            await self.close(handoff_id, "resolved" if conversation.state == State.RESOLVED else "handback")
            return 1
        if handoff.status == "assigned" and conversation.state == State.QUEUED:
            await self._move(conversation.id, State.QUEUED, State.ASSIGNED, f"assigned:{handoff.agent_id}")
            return 1
        if handoff.status in ("new", "waiting") and conversation.state == State.ASSIGNED:
            await self._move(conversation.id, State.ASSIGNED, State.QUEUED, f"transfer:{handoff.skill}")
            return 1
        return 0

    # -- internals ---------------------------------------------------------------------------

    def _common(self, now: float | None = None) -> list[str | int]:
        """ARGV[1..3] of every script: prefix, time, audit cap."""
        return [self.keys.prefix, repr(time.time() if now is None else now), self.audit_maxlen]

    async def _many(self, ids: set[str] | list[str]) -> list[Handoff]:
        ordered = sorted(ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for handoff_id in ordered:
                pipe.hgetall(self.keys.handoff(handoff_id))
            hashes = await pipe.execute()
        return [Handoff.from_hash(data) for data in hashes if data]

    async def _call(self, hook: HandoffHook | None, handoff: Handoff) -> None:
        """Run a callback; its failure is logged, never undoes the queue's change."""
        if hook is None:
            return
        try:
            await hook(handoff)
        except Exception:
            log.exception("handoff %s: callback %r failed", handoff.id, hook)

    async def _move(self, conversation_id: str, expected: State, target: State, reason: str) -> State | None:
        """Move the conversation ``expected -> target``; the state it is in afterwards (None if gone).

        Someone may have done it already (a reconcile, another worker): that is not an error.
        """
        try:
            conversation = await self.store.transition(
                conversation_id, target, expected_from=expected, reason=reason
            )
        except InvalidTransition as exc:
            return exc.from_state
        except ConversationNotFound:
            log.warning("handoff of conversation %s: the conversation is gone", conversation_id)
            return None
        return conversation.state


__all__ = [
    "HANDOFF_EVENTS",
    "OUTCOMES",
    "ClaimResult",
    "Handoff",
    "HandoffQueue",
    "HandoffRequest",
    "QueueStanding",
]
