"""Concurrent submissions sent together in one call, each caller getting its own answer.

A :class:`Batcher` wraps an asynchronous ``flush`` that takes a list of
submissions and answers, in order, one result or exception for each. Callers
hand in a submission and wait; a single flusher task sends whatever has
gathered in one call, then whatever gathered meanwhile, until nothing waits,
so N concurrent callers cost about one round trip instead of N. Under no load
a submission goes out on the next turn of the event loop, so nothing waits on
a timer. One call holds at most ``max_batch`` events, as counted by ``size``,
unless one submission alone is larger. An exception the flush raises fails
every submission of that call; one it answers in place of a result fails that
submission alone.

Two users:

- :class:`~relay.client.stream_publisher.StreamPublisher` gathers
  publications (the gateway's HTTP publishes, each under its own idempotency
  key, if any) into one publish script call.
- :class:`~relay.client.reporters.AsyncReporter` gathers reports made
  concurrently into one parcel, sent under one idempotency key with retry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

S = TypeVar("S")
R = TypeVar("R")

# One answer per submission, in order; an exception fails that submission alone.
Flush = Callable[[list[S]], Awaitable[Sequence[R | BaseException]]]


class Batcher(Generic[S, R]):
    """Sends concurrent submissions together through ``flush``, one answer each.

    ``size`` tells how many events a submission holds; a batch holds at most
    ``max_batch`` of them, unless one submission alone is larger.
    """

    def __init__(self, flush: Flush[S, R], *, max_batch: int, size: Callable[[S], int]) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._size = size
        self._waiting: list[tuple[S, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, submission: S) -> R:
        """Send ``submission`` with whatever else is waiting; answers its own answer."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append((submission, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._run())
        return await future

    async def drain(self) -> None:
        """Wait until everything submitted so far has been sent."""
        if self._flusher is not None:
            await asyncio.wait([self._flusher])

    def _take(self) -> list[tuple[S, asyncio.Future[R]]]:
        taken, size = 0, 0
        for submission, _ in self._waiting:
            grows = self._size(submission)
            if taken and size + grows > self._max_batch:
                break
            taken += 1
            size += grows
        batch = self._waiting[:taken]
        del self._waiting[:taken]
        return batch

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._take()
                try:
                    answers = await self._flush([submission for submission, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():
                        continue
                    if isinstance(answer, BaseException):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            self._flusher = None
