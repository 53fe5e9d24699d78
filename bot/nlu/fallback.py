"""An NLU engine with a stand-in: when the first engine fails, the second one answers.

Used with a Rasa server first and Baton's own engine second (``BATON_NLU_ENGINE=rasa``).
After a failure the first engine is left alone for ``retry_seconds``, so while Rasa is down
each message costs one local parse, not a timeout first. Every message the stand-in answers
is counted, and each outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from bot.nlu.types import BatchParser, ParseResult

log = logging.getLogger(__name__)


class FallbackEngine:
    """Parses with ``primary``; when it raises one of ``failures``, ``backup`` parses instead.

    Args:
        primary: the preferred engine (a Rasa server).
        backup: the engine that never depends on another process (Baton's own).
        failures: the exceptions that mean "primary could not answer"; others propagate.
        retry_seconds: how long to use ``backup`` alone after ``primary`` failed.
        name: the primary's name in log lines.
        clock: seconds, monotonic (tests pass their own).

    Attributes:
        fallbacks: messages ``backup`` understood because ``primary`` failed or was resting.
        failures_seen: calls to ``primary`` that failed.
    """

    def __init__(
        self,
        primary: BatchParser,
        backup: BatchParser,
        failures: tuple[type[Exception], ...],
        retry_seconds: float = 15.0,
        name: str = "primary",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.primary = primary
        self.backup = backup
        self.failures = failures
        self.retry_seconds = retry_seconds
        self.name = name
        self.clock = clock
        self.fallbacks = 0
        self.failures_seen = 0
        self._resting_until: float | None = None  # set while primary is considered down
        self._stand_ins: frozenset[int] = frozenset()  # ids of the last batch's results by backup
        self._lock = threading.Lock()  # counters are read by the service's event loop

    @property
    def primary_down(self) -> bool:
        """True while the backup answers alone."""
        return self._resting_until is not None

    def close(self) -> None:
        """Close the engines that hold connections (the Rasa client)."""
        for engine in (self.primary, self.backup):
            close = getattr(engine, "close", None)
            if close is not None:
                close()

    def parse(self, text: str) -> ParseResult:
        """Understand one message."""
        return self.parse_batch([text])[0]

    def parse_batch(self, texts: Sequence[str]) -> list[ParseResult]:
        """Understand ``texts``, each by ``primary`` if it can, the rest by ``backup`` in one call."""
        results: list[ParseResult | None] = [None] * len(texts)
        for i, text in enumerate(texts):
            if not self._primary_allowed():
                break
            try:
                results[i] = self.primary.parse_batch([text])[0]
            except self.failures as exc:
                self._failed(exc)
                break
            self._recovered()
        rest = [i for i, result in enumerate(results) if result is None]
        stand_ins = []
        if rest:
            with self._lock:
                self.fallbacks += len(rest)
            for i, result in zip(rest, self.backup.parse_batch([texts[i] for i in rest]), strict=True):
                results[i] = result
                stand_ins.append(id(result))
        self._stand_ins = frozenset(stand_ins)
        return results  # type: ignore[return-value]  # every slot is filled above

    def from_stand_in(self, result: ParseResult) -> bool:
        """True when ``result`` (of the latest batch) came from ``backup``: a cache should not keep
        it, so that the message is asked of ``primary`` again once it is back."""
        return id(result) in self._stand_ins

    def _primary_allowed(self) -> bool:
        return self._resting_until is None or self.clock() >= self._resting_until

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self.failures_seen += 1
        if self._resting_until is None:
            log.warning(
                "NLU engine %s failed (%s); Baton's own engine answers, next try in %g s",
                self.name,
                exc,
                self.retry_seconds,
            )
        else:
            log.info("NLU engine %s still failing (%s)", self.name, exc)
        self._resting_until = self.clock() + self.retry_seconds

    def _recovered(self) -> None:
        if self._resting_until is not None:
            log.warning("NLU engine %s answers again", self.name)
            self._resting_until = None
