"""The crash campaign: ``baton serve`` killed with SIGKILL over and over while customers ask for a person.

Each run is the scenario of the fault tests (`tests/faults/crash.py`): N web customers write "I want
to talk to a person" at once; the service is killed at a random moment of the burst (drawn from
``--min-ms``..``--max-ms`` by the run's seed) or dies at a named failpoint; it is started again on
the same Redis and port; every page resends its message with the same id; then every promise is
checked (each message stored once and handled once, one answer, one handoff, one queue notice,
nothing left pending). Prints one JSON line per run and a summary.

    .venv/bin/python bench/crash_campaign.py --runs 20 --customers 40

Everything runs on 127.0.0.1: a private redis-server and the service on the tiny knowledge base
(trained on the first run into ``--model-dir``).
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

# The failpoints a web burst passes through (the agent and WeChat ones need their own traffic).
BURST_POINTS = ("stored", "understood", "committed", "admitted", "claimed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed kills (each with its own seed)")
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--min-ms", type=float, default=10.0)
    parser.add_argument("--max-ms", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "var" / "bench-crash-model")
    args = parser.parse_args()
    assert set(BURST_POINTS) <= POINTS
    folder = Path(tempfile.mkdtemp(prefix="baton-crash-"))
    rows = []
    with RedisServer(data_dir=folder / "redis") as redis_server:
        service = ServiceProcess(TINY_KB, folder, redis_server.url, model_dir=args.model_dir)
        try:
            plans: list[tuple[str, float | None, str | None]] = []
            for run in range(args.runs):
                rng = random.Random(args.seed * 1000 + run)
                plans.append((f"t{run}", rng.uniform(args.min_ms, args.max_ms) / 1000, None))
            for point in BURST_POINTS:
                nth = "" if point in ("admitted", "claimed") else f":{1 + args.customers // 5}"
                plans.append((point, None, point + nth))
            for name, kill_after, failpoint in plans:
                started = time.monotonic()
                outcome = crash.run(
                    service,
                    f"crash-{name}:",
                    redis_server.url,
                    args.customers,
                    kill_after=kill_after,
                    failpoint=failpoint,
                )
                service.stop()
                row = {
                    "run": name,
                    "kill_after_ms": round(outcome.kill_after_ms, 1)
                    if outcome.kill_after_ms is not None
                    else None,
                    "failpoint": outcome.failpoint,
                    "acked_before_kill": outcome.acked_before_kill,
                    "settle_seconds": outcome.settle_seconds,
                    "problems": outcome.problems[:5],
                    "problem_count": len(outcome.problems),
                    "seconds": round(time.monotonic() - started, 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            service.stop()
    failed = [row["run"] for row in rows if row["problem_count"]]
    summary = {
        "runs": len(rows),
        "timed_kills": args.runs,
        "failpoints": len(BURST_POINTS),
        "customers_per_run": args.customers,
        "messages_checked": len(rows) * args.customers,
        "acked_before_kill": sum(row["acked_before_kill"] for row in rows),
        "runs_with_problems": failed,
    }
    print(json.dumps({"summary": summary}))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
