"""Errors raised while loading a knowledge base or an index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a knowledge-base file, located for the person who fixes it."""

    file: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.reason}"


class KnowledgeBaseError(ValueError):
    """A knowledge base was refused; ``problems`` lists every reason found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class IndexMismatchError(RuntimeError):
    """An index (or trained model) was built with another encoder than the one offered."""
