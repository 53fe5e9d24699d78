"""The crash campaign: ``baton serve`` killed with SIGKILL over and over while customers ask for a person.

Each chain is the scenario of the fault tests (`tests/faults/crash.py`): for each crash, a burst
of N new web customers writes "I want to talk to a person" at once and the service is killed at a
random moment of the burst (drawn from ``--min-ms``..``--max-ms`` by the seed) or dies at a named
failpoint; it is started again on the same Redis and port, where the next burst meets whatever the
last crash left. After the chain, every page resends its message with the same id, and every
promise is checked for every customer (stored once, handled once: one answer, one handoff, one
queue notice, nothing pending, the counts right). Prints one JSON line per chain and a summary.

    .venv/bin/python bench/crash_campaign.py --chains 4 --crashes 6 --customers 40

Everything runs on 127.0.0.1: a private redis-server and the service on the tiny knowledge base
(trained on the first start into ``--model-dir``).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conversations.failpoints import POINTS  # noqa: E402 (after the path is set)
from conversations.redis_server import RedisServer  # noqa: E402
from tests.conftest import TINY_KB, ServiceProcess  # noqa: E402
from tests.faults import crash  # noqa: E402

# The failpoints a web burst passes through (an agent's message has its own test).
BURST_POINTS = ("stored", "understood", "committed", "admitted", "claimed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chains", type=int, default=4, help="chains of timed kills (each its own seed)")
    parser.add_argument("--crashes", type=int, default=6, help="timed kills per chain")
    parser.add_argument("--customers", type=int, default=40, help="new customers per crash")
    parser.add_argument("--min-ms", type=float, default=10.0)
    parser.add_argument("--max-ms", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "var" / "bench-crash-model")
    args = parser.parse_args()
    assert set(BURST_POINTS) <= POINTS
    folder = Path(tempfile.mkdtemp(prefix="baton-crash-"))
    chains: list[tuple[str, list[crash.Crash]]] = []
    for number in range(args.chains):
        rng = random.Random(args.seed * 1000 + number)
        kills = [rng.uniform(args.min_ms, args.max_ms) for _ in range(args.crashes)]
        chains.append((f"timed-{number}", [crash.Crash(f"{ms:.0f}ms", kill_after=ms / 1000) for ms in kills]))
    # Each failpoint twice: early (the first few messages) and late (deep in the burst).
    points = []
    for point in BURST_POINTS:
        for nth in (2, args.customers // 2) if point in ("stored", "understood", "committed") else (1, 2):
            points.append(crash.Crash(f"{point}:{nth}", failpoint=f"{point}:{nth}"))
    chains.append(("failpoints", points))
    rows = []
    with RedisServer(data_dir=folder / "redis") as redis_server:
        service = ServiceProcess(TINY_KB, folder, redis_server.url, model_dir=args.model_dir)
        try:
            for name, crashes in chains:
                started = time.monotonic()
                outcome = crash.chain(service, f"crash-{name}:", redis_server.url, crashes, args.customers)
                service.stop()
                row = {
                    "chain": name,
                    "crashes": outcome.crashes,
                    "customers": outcome.customers,
                    "acked_before_kill": outcome.acked_before_kill,
                    "recovery_crashes": outcome.recovery_crashes,
                    "unreached_failpoints": outcome.unreached,
                    "settle_seconds": outcome.settle_seconds,
                    "problems": outcome.problems[:5],
                    "problem_count": len(outcome.problems),
                    "seconds": round(time.monotonic() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            service.stop()
    failed = [row["chain"] for row in rows if row["problem_count"]]
    summary = {
        "chains": len(rows),
        "crashes": sum(len(row["crashes"]) + row["recovery_crashes"] for row in rows),
        "kill_points": len(BURST_POINTS),
        "messages_checked": sum(row["customers"] for row in rows),
        "acked_before_kill": sum(sum(row["acked_before_kill"].values()) for row in rows),
        "chains_with_problems": failed,
    }
    print(json.dumps({"summary": summary}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
