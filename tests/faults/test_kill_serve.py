"""``baton serve`` killed with SIGKILL while web customers ask for a person at once: at moments of the
burst from 10 ms to 1 s, and at the named stages of a message's life (`conversations.failpoints`;
``bench/crash_campaign.py`` also kills at ``admitted``),
each crash on fresh traffic and restarted on the same Redis, then every customer's page sends its
message again: each message is stored once and handled exactly once, and every customer waits in
the queue. `tests/faults/crash.py` is the scenario; ``bench/crash_campaign.py`` runs it over many
seeds and kill times.
"""

from __future__ import annotations

import pytest

from tests.conftest import TINY_KB, ServiceProcess
from tests.faults import crash

CUSTOMERS = 40
CRASHES = [
    crash.Crash("10ms", kill_after=0.01),
    crash.Crash("stored", failpoint="stored:7"),
    crash.Crash("understood", failpoint="understood:7"),
    crash.Crash("committed", failpoint="committed:7"),
    crash.Crash("claimed", failpoint="claimed"),
    crash.Crash("1s", kill_after=1.0),
]


@pytest.fixture
def fault_service(baton_service, redis_server, tmp_path):
    """A ``baton serve`` of its own (the tiny knowledge base's model, already trained), on database 3."""
    url = redis_server.url.rsplit("/", 1)[0] + "/3"
    service = ServiceProcess(TINY_KB, tmp_path, url, model_dir=baton_service.model_dir)
    try:
        yield service, url
    finally:
        service.stop()


def test_sigkill_at_every_stage_of_a_burst_of_requests_for_a_person(fault_service):
    service, url = fault_service
    outcome = crash.chain(service, "fault-chain:", url, CRASHES, CUSTOMERS)
    assert outcome.problems == [], f"{outcome}\n{service.log_tail(60)}"
    assert outcome.unreached == []  # every failpoint fired
    # The crashes cut real work short: some messages were acknowledged and others not, before a kill.
    acked = outcome.acked_before_kill
    assert sum(acked.values()) > 0 and any(count < CUSTOMERS for count in acked.values()), acked
