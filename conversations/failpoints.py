"""Named points where the crash tests kill a process: ``BATON_FAILPOINT=name`` or ``name:n``.

With the variable set, the process sends itself SIGKILL the n-th time (default 1) it reaches the
point ``name``: no cleanup, no flush, exactly as the kernel's OOM killer or a power cut would stop
it. Unset (as always outside the fault tests, `tests/faults`), `reach` only compares two strings.

The points, in the order a message lives through them: ``stored`` (a customer's message is stored
and pending, not acknowledged to the client yet), ``understood`` (the bot's turn is decided, not
committed), ``committed`` (the turn is committed, its inbox entry not acknowledged), ``admitted``
(an assigner admitted a handoff, before routing it), ``claimed`` (routed, before the queue notice
and the stream acknowledgement), ``agent_stored`` (an agent's message is stored, the HTTP answer
not sent), ``wechat_claimed`` (the WeChat outbox took a turn, before calling WeChat's API) and
``wechat_sent`` (WeChat accepted it, before the outbox records that).
"""

from __future__ import annotations

import os
import signal

POINTS = frozenset(
    {
        "stored",
        "understood",
        "committed",
        "admitted",
        "claimed",
        "agent_stored",
        "wechat_claimed",
        "wechat_sent",
    }
)


def _armed() -> tuple[str | None, int]:
    value = os.environ.get("BATON_FAILPOINT", "").strip()
    if not value:
        return None, 0
    name, _, nth = value.partition(":")
    if name not in POINTS:
        raise ValueError(
            f"BATON_FAILPOINT names no failpoint {name!r}; expected one of {', '.join(sorted(POINTS))}"
        )
    return name, int(nth or "1")


_POINT, _NTH = _armed()
_reached = 0


def reach(name: str) -> None:
    """Pass the point ``name``; the process dies here if the fault tests armed it."""
    global _reached
    if name != _POINT:
        return
    _reached += 1
    if _reached >= _NTH:
        os.kill(os.getpid(), signal.SIGKILL)
