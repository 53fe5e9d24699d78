"""Peak memory of Baton's NLU while it only serves: a saved model loaded and asked every test message.

`baton evaluate`'s peak covers training and parsing in one process; a Rasa server's peak covers
only serving (it loads a model trained elsewhere). This measures Baton's side of that
comparison the same way: one process trains and saves the model, a second loads it and parses
every test message one at a time; the second one's peak resident memory is reported.

Usage: .venv/bin/python bench/baton_serving_memory.py TRAIN.yml TEST.yml [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.measure import run_measured  # noqa: E402  (the path above makes it importable)


def _save(train: str, folder: str) -> None:
    from bot.nlu.engine import BatonNLU
    from knowledge_index.nlu_file import load_nlu_file

    BatonNLU.train(load_nlu_file(train, 50_000_000, [])).save(Path(folder))


def _serve(folder: str, test: str) -> None:
    from bot.nlu.engine import BatonNLU
    from knowledge_index.nlu_file import load_nlu_file

    engine = BatonNLU.load(Path(folder))
    for example in load_nlu_file(test, 50_000_000, []).examples:
        engine.parse(example.text)


def peak_of(args: list[str]) -> float:
    """Run this script with ``args`` in a child process; its peak resident memory in MB."""
    status, _, err, _, peak = run_measured([sys.executable, __file__, *args], cwd=ROOT)
    if status != 0:
        raise RuntimeError(f"{args[0]} failed:\n{err[-2000:]}")
    return peak


def serving_peak_mb(train: Path, test: Path) -> float:
    """Train on ``train`` and save, then the peak memory of loading that model and parsing ``test``."""
    with tempfile.TemporaryDirectory() as folder:
        peak_of(["--save", str(train), folder])
        return peak_of(["--serve", folder, str(test)])


def main() -> int:
    """Print the serving peak for the given train and test files."""
    if len(sys.argv) == 4 and sys.argv[1] in ("--save", "--serve"):
        (_save if sys.argv[1] == "--save" else _serve)(sys.argv[2], sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("train", type=Path)
    parser.add_argument("test", type=Path)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    peak = round(serving_peak_mb(args.train, args.test))
    print(json.dumps({"serving_peak_rss_mb": peak}) if args.json else f"serving peak: {peak} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
