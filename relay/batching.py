"""Coalescing concurrent publishes into one Redis round trip.

Every caller hands in its events and waits; one flusher task sends whatever
has gathered as a single batch, then the next, so N concurrent publishers cost
about one pipelined MULTI/EXEC instead of N. Under no load a publish is sent
on the next turn of the event loop, so nothing waits on a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from relay.models import ProgressEvent

R = TypeVar("R")

Flush = Callable[[list[ProgressEvent]], Awaitable[list[R]]]


class Batcher(Generic[R]):
    """Sends concurrent submissions together through ``flush``, one answer per event."""

    def __init__(self, flush: Flush[R], *, max_batch: int) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._waiting: list[tuple[list[ProgressEvent], asyncio.Future[list[R]]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, events: list[ProgressEvent]) -> list[R]:
        """Send ``events`` with whatever else is waiting; answers in the same order."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[R]] = loop.create_future()
        self._waiting.append((events, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._run())
        return await future

    async def drain(self) -> None:
        """Wait until everything submitted so far has been sent."""
        if self._flusher is not None:
            await asyncio.wait([self._flusher])

    def _take(self) -> list[tuple[list[ProgressEvent], asyncio.Future[list[R]]]]:
        taken, size = 0, 0
        for events, _ in self._waiting:
            if taken and size + len(events) > self._max_batch:
                break
            taken += 1
            size += len(events)
        batch = self._waiting[:taken]
        del self._waiting[:taken]
        return batch

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                events = [event for group, _ in batch for event in group]
                try:
                    answers = await self._flush(events)
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                start = 0
                for group, future in batch:
                    if not future.done():
                        future.set_result(answers[start : start + len(group)])
                    start += len(group)
        finally:
            self._flusher = None
