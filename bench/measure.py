"""Run a command, pass its output through, and report its wall time and peak memory.

Usage: python bench/measure.py LABEL -- COMMAND [ARGS...]
Appends one JSON line {label, command, seconds, peak_rss_mb, output} to bench/out/measurements.jsonl.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_measured(command: list[str], **kwargs) -> tuple[int, str, str, float, float]:
    """Run ``command`` to its end: exit status, stdout, stderr, wall seconds, peak RSS in MB.

    The peak is the child's own (``wait4``'s rusage), not the largest of every child so far.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, **kwargs)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (
            process.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            seconds,
            usage.ru_maxrss / 1024,  # Linux: KiB
        )


def main(argv: list[str]) -> int:
    """Run ``argv`` after ``--`` and record its measurements under the label before it."""
    if "--" not in argv or argv.index("--") != 1:
        sys.exit(__doc__)
    label, command = argv[0], argv[2:]
    returncode, stdout, stderr, seconds, peak_mb = run_measured(command)
    sys.stderr.write(stderr)
    sys.stdout.write(stdout)
    record = {
        "label": label,
        "command": " ".join(command),
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak_mb),
        "output": stdout.strip(),
    }
    out = Path("bench/out")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "measurements.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"[{label}] {seconds:.1f} s, peak {peak_mb:.0f} MB", file=sys.stderr)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
