"""Versioned model folders: a new version is written beside the one in service, then made current at once.

Layout: ``root/versions/<version>/`` (finished versions hold a ``READY`` marker written
last) and ``root/current``, a symlink replaced atomically with rename(2). Readers that
resolved ``current`` before a switch keep reading their version, which is pruned
only when several newer ones exist.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

READY = "READY"


class VersionStore:
    """Publishes and finds versions under ``root``."""

    def __init__(self, root: str | Path, keep: int = 3) -> None:
        self.root = Path(root)
        self.versions = self.root / "versions"
        self.keep = keep

    def publish(self, write: Callable[[Path], None]) -> Path:
        """Call ``write(folder)`` on a fresh folder, then make it the current version.

        If ``write`` raises, the half-written folder is removed and the current version is untouched.
        """
        self.versions.mkdir(parents=True, exist_ok=True)
        now = time.time_ns()  # names sort in publishing order
        name = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}"
        tmp = self.versions / f".tmp-{name}"
        tmp.mkdir()
        try:
            write(tmp)
            (tmp / READY).write_text(name, encoding="utf-8")
            final = self.versions / name
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        link_tmp = self.root / f".current-{uuid.uuid4().hex}"
        os.symlink(Path("versions") / name, link_tmp)
        os.replace(link_tmp, self.root / "current")
        self._prune(final)
        return final

    def current(self) -> Path | None:
        """The folder of the version in service, or None if none was published."""
        link = self.root / "current"
        if not link.exists():
            return None
        path = link.resolve()
        return path if (path / READY).exists() else None

    def _prune(self, current: Path) -> None:
        finished = sorted(p for p in self.versions.iterdir() if (p / READY).exists())
        for old in finished[: -self.keep]:
            if old != current:
                shutil.rmtree(old, ignore_errors=True)
