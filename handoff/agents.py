"""The agent directory: who the human agents are, their passwords, who is online and how loaded.

Agents sign in with their id (a login name) and a password. Passwords are hashed with
scrypt (``hashlib.scrypt``, a random 16-byte salt, the parameters kept with the hash), never
stored or logged. Going online or offline publishes an event on the handoff events channel
(`handoff.keys.HandoffKeys.events`) so the assigners route waiting chats at once. An agent's
load is the number of chats assigned to them now, kept by `handoff.queue.HandoffQueue`.

Going offline does not take chats away: the agent may still finish the ones they hold;
they only stop getting new ones.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal, Self

from redis.asyncio import Redis

from handoff.events import AgentPresence
from handoff.keys import DEFAULT_PREFIX, HandoffKeys

Role = Literal["agent", "supervisor"]
ROLES: tuple[str, ...] = ("agent", "supervisor")
LANGUAGES: tuple[str, ...] = ("zh", "en")

# scrypt cost: 2**14 x 8 uses 16 MiB and takes tens of milliseconds, the usual interactive setting.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SALT_BYTES = 16

_AGENT_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")  # no ':' so an id cannot name another key


class AgentExists(ValueError):
    """An agent with this id exists already (pass ``replace=True`` to overwrite it)."""


class UnknownAgent(LookupError):
    """No agent has this id."""


@dataclass(frozen=True)
class Agent:
    """A person who takes handed-off chats."""

    id: str  # the login name
    name: str
    role: Role = "agent"
    skills: tuple[str, ...] = ("general",)
    languages: tuple[str, ...] = ("zh", "en")
    max_chats: int = 3  # chats at once

    def __post_init__(self) -> None:
        if not _AGENT_ID.match(self.id):
            raise ValueError(f"agent id {self.id!r}: use 1-64 letters, digits and _ . @ -")
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; expected one of {', '.join(ROLES)}")
        unknown = set(self.languages) - set(LANGUAGES)
        if unknown:
            raise ValueError(f"unknown languages {sorted(unknown)}; expected some of {', '.join(LANGUAGES)}")
        if self.max_chats < 0:
            raise ValueError("max_chats must be >= 0")
        # Lists from JSON become tuples, so the dataclass stays hashable and immutable.
        object.__setattr__(self, "skills", tuple(self.skills))
        object.__setattr__(self, "languages", tuple(self.languages))

    def can_serve(self, skill: str, language: str | None) -> bool:
        """True if the agent has ``skill`` and speaks ``language`` (an empty language matches anyone)."""
        return skill in self.skills and (not language or language in self.languages)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (no password, ever)."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "skills": list(self.skills),
            "languages": list(self.languages),
            "max_chats": self.max_chats,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The inverse of `to_dict`; also reads the all-text form of the Redis hash."""
        skills = data.get("skills", ())
        languages = data.get("languages", ())
        return cls(
            id=data["id"],
            name=data.get("name") or data["id"],
            role=data.get("role") or "agent",
            skills=tuple(json.loads(skills) if isinstance(skills, str) else skills),
            languages=tuple(json.loads(languages) if isinstance(languages, str) else languages),
            max_chats=int(data.get("max_chats", 0)),
        )

    def to_hash(self) -> dict[str, str]:
        """The fields as stored in Redis."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "skills": json.dumps(list(self.skills), ensure_ascii=False),
            "languages": json.dumps(list(self.languages)),
            "max_chats": str(self.max_chats),
        }


_ALL_SKILLS = ("general", "logistics", "after_sales", "billing", "complaints")

# The demo users `AgentDirectory.seed_demo` creates; each password is the id + "-demo".
DEMO_AGENTS: tuple[Agent, ...] = (
    Agent("alice", "Alice", "agent", ("general", "logistics", "after_sales"), ("zh", "en"), 3),
    Agent("bob", "Bob", "agent", ("general", "billing", "complaints"), ("zh", "en"), 3),
    Agent("chen", "陈晨", "agent", ("general", "logistics"), ("zh",), 2),
    Agent("sam", "Sam", "supervisor", _ALL_SKILLS, ("zh", "en"), 5),
)


def demo_password(agent_id: str) -> str:
    """The password of a demo user (e.g. ``alice-demo``)."""
    return f"{agent_id}-demo"


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$salt_hex$hash_hex`` for ``password``, with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_DKLEN)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    """True if ``password`` hashes to ``stored`` (compared in constant time)."""
    try:
        scheme, n, r, p, salt_hex, digest_hex = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest_hex)
        digest = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:  # a malformed record: refuse rather than crash the sign-in
        return False
    return hmac.compare_digest(digest, expected)


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password: an unknown id is checked against it, so it costs one hash too."""
    return hash_password(secrets.token_hex(16))


# KEYS[1] agent hash, KEYS[2] password key, KEYS[3] the set of agent ids.
# ARGV[1] replace (1/0), ARGV[2] password hash, ARGV[3...] the hash as field, value pairs.
_CREATE = """
if ARGV[1] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('SET', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], redis.call('HGET', KEYS[1], 'id'))
return 1
"""

# KEYS[1] agent hash, KEYS[2] online set, KEYS[3] events channel.
# ARGV[1] agent id, ARGV[2] 1 online / 0 offline, ARGV[3] the event JSON.
# Publishes only when the state changes, so a reconnecting panel does not wake every assigner.
_SET_ONLINE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local changed
if ARGV[2] == '1' then
  changed = redis.call('SADD', KEYS[2], ARGV[1])
else
  changed = redis.call('SREM', KEYS[2], ARGV[1])
end
if changed == 1 then redis.call('PUBLISH', KEYS[3], ARGV[3]) end
return changed
"""


class AgentDirectory:
    """Agents, their passwords and presence in Redis, through ``redis.asyncio``.

    Args:
        client: a ``redis.asyncio.Redis`` made with ``decode_responses=True`` (not closed here).
        prefix: put before every key, e.g. ``baton:``.
    """

    def __init__(self, client: Redis, prefix: str = DEFAULT_PREFIX) -> None:
        if not client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("the Redis client must be created with decode_responses=True")
        self.client = client
        self.keys = HandoffKeys(prefix)
        self._create = client.register_script(_CREATE)
        self._set_online = client.register_script(_SET_ONLINE)

    async def create(self, agent: Agent, password: str, *, replace: bool = False) -> Agent:
        """Store ``agent`` with ``password`` (hashed).

        Raises:
            AgentExists: the id is taken and ``replace`` is False.
            ValueError: the password is empty.
        """
        if not password:
            raise ValueError("a password must not be empty")
        # scrypt takes tens of milliseconds on purpose: keep it off the event loop.
        hashed = await asyncio.to_thread(hash_password, password)
        fields = [item for pair in agent.to_hash().items() for item in pair]
        created = await self._create(
            keys=[self.keys.agent(agent.id), self.keys.password(agent.id), self.keys.agents],
            args=["1" if replace else "0", hashed, *fields],
        )
        if not created:
            raise AgentExists(agent.id)
        return agent

    async def verify(self, agent_id: str, password: str) -> Agent | None:
        """The agent if ``password`` is theirs, else None (an unknown id too).

        An unknown id costs a hash as well, so the time taken does not tell which ids exist.
        """
        stored = None
        if _AGENT_ID.match(agent_id):
            stored = await self.client.get(self.keys.password(agent_id))
        matches = await asyncio.to_thread(check_password, password, stored or _dummy_hash())
        if stored is None or not matches:
            return None
        return await self.get(agent_id)

    async def get(self, agent_id: str) -> Agent | None:
        """The agent, or None if unknown."""
        if not _AGENT_ID.match(agent_id):
            return None
        data = await self.client.hgetall(self.keys.agent(agent_id))
        return Agent.from_dict(data) if data else None

    async def all(self) -> list[Agent]:
        """Every agent, sorted by id."""
        return await self._many(await self.client.smembers(self.keys.agents))

    async def set_online(self, agent_id: str, online: bool) -> bool:
        """Mark the agent online or offline; True if that changed anything (then an event is published).

        Raises:
            UnknownAgent: no agent has this id.
        """
        event = AgentPresence(agent_id, online, time.time()).payload
        changed = await self._set_online(
            keys=[self.keys.agent(agent_id), self.keys.online, self.keys.events],
            args=[agent_id, "1" if online else "0", json.dumps(event)],
        )
        if changed == -1:
            raise UnknownAgent(agent_id)
        return bool(changed)

    async def is_online(self, agent_id: str) -> bool:
        """True if the agent is online."""
        return bool(await self.client.sismember(self.keys.online, agent_id))

    async def online(self) -> list[Agent]:
        """The agents online now, sorted by id."""
        return await self._many(await self.client.smembers(self.keys.online))

    async def load(self, agent_id: str) -> int:
        """How many chats the agent holds now."""
        return int(await self.client.scard(self.keys.chats(agent_id)))

    async def loads(self, agent_ids: list[str]) -> dict[str, int]:
        """`load` of several agents in one round trip."""
        async with self.client.pipeline(transaction=False) as pipe:
            for agent_id in agent_ids:
                pipe.scard(self.keys.chats(agent_id))
            counts = await pipe.execute()
        return {agent_id: int(count) for agent_id, count in zip(agent_ids, counts, strict=True)}

    async def seed_demo(self) -> int:
        """Create the `DEMO_AGENTS` if there are no agents yet; returns how many were created.

        Run twice, or by two replicas at once, it creates each demo user once at most.
        """
        if await self.client.scard(self.keys.agents):
            return 0
        created = 0
        for agent in DEMO_AGENTS:
            try:
                await self.create(agent, demo_password(agent.id))
            except AgentExists:  # another replica seeding at the same moment got there first
                continue
            created += 1
        return created

    async def _many(self, ids: set[str] | list[str]) -> list[Agent]:
        ordered = sorted(ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for agent_id in ordered:
                pipe.hgetall(self.keys.agent(agent_id))
            hashes = await pipe.execute()
        return [Agent.from_dict(data) for data in hashes if data]
