"""Run a command, pass its output through, and report its wall time and peak memory.

Usage: python bench/measure.py LABEL -- COMMAND [ARGS...]
Appends one JSON line {label, command, seconds, peak_rss_mb, output} to bench/out/measurements.jsonl.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    """Run ``argv`` after ``--`` and record its measurements under the label before it."""
    if "--" not in argv or argv.index("--") != 1:
        sys.exit(__doc__)
    label, command = argv[0], argv[2:]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    sys.stderr.write(result.stderr)
    sys.stdout.write(result.stdout)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux reports KiB
    record = {
        "label": label,
        "command": " ".join(command),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb),
        "output": result.stdout.strip(),
    }
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "measurements.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"[{label}] {seconds:.1f} s, peak {peak_mb:.0f} MB", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
