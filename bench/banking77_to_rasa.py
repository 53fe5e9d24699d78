"""Convert BANKING77's CSV files (columns text,category) into Rasa 3 NLU YAML.

BANKING77 (Casanueva et al. 2020, PolyAI, CC BY 4.0) is not in this repository: get train.csv and
test.csv from PolyAI's task-specific-datasets repository (banking_data/), or write them from the
Hugging Face dataset PolyAI/banking77 with the label names as the category column.

Usage: python bench/banking77_to_rasa.py ../shared/datasets/banking77 bench/out/banking77
writes train.yml and test.yml there.
"""

from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path


def to_rasa(rows: list[dict[str, str]]) -> str:
    """Rasa NLU YAML with one block per category, examples in file order."""
    by_intent: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        text = " ".join(row["text"].split())
        if text and text not in by_intent[row["category"]]:
            by_intent[row["category"]].append(text)
    lines = ['version: "3.1"', "nlu:"]
    for intent, examples in by_intent.items():
        lines += [f"- intent: {intent}", "  examples: |"]
        lines += [f"    - {text}" for text in examples]
    return "\n".join(lines) + "\n"


def main(source: str, target: str) -> None:
    """Write ``train.yml`` and ``test.yml`` into ``target``."""
    out = Path(target)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        with open(Path(source) / f"{split}.csv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        (out / f"{split}.yml").write_text(to_rasa(rows), encoding="utf-8")
        print(f"{split}: {len(rows)} rows -> {out / f'{split}.yml'}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
