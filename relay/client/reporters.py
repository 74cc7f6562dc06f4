"""Reporters: how a Python worker publishes progress.

:class:`Reporter` (blocking) and :class:`AsyncReporter` (asyncio) write
straight to the Redis streams through the same publish function the gateway
uses, so their entries are indistinguishable from HTTP-published ones.
:class:`HttpReporter` posts to a gateway, for workers that cannot reach Redis.
Each one retries an unreachable target with backoff, keeps undelivered events
in a bounded buffer (see :mod:`relay.client.retry`), and learns from every report
whether the session's cancellation was requested.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Self

import orjson
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.client.batching import Batcher
from relay.client.redis_urls import (
    AsyncStore,
    Mode,
    SyncStore,
    is_cluster,
    open_async_redis,
    open_redis,
)
from relay.client.reporting_session import (
    DEFAULT_HEARTBEAT_INTERVAL,
    AsyncReportingSession,
    ReportingSession,
)
from relay.client.retry import (
    Outcome,
    Packing,
    Parcel,
    PendingBuffer,
    Refused,
    ReportError,
    RetryPolicy,
    TransientError,
    send_with_retry,
    send_with_retry_async,
)
from relay.client.stream_publisher import StreamPublisher
from relay.protocol.entries import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY_BYTES,
    PUBLISH_SCRIPT,
    Publication,
    Published,
    PublishPlan,
    Receipt,
    now_ms,
)
from relay.protocol.event import ProgressEvent, Status
from relay.protocol.idempotency import (
    DEFAULT_IDEMPOTENCY_TTL,
    IDEMPOTENCY_HEADER,
    REUSED,
    KeyReused,
)
from relay.protocol.keys import Keys
from relay.protocol.plans import PlanSpec
from relay.protocol.publish_rounds import (
    LoadScript,
    PublishRounds,
    TypeRegistry,
    publish_rounds,
    refuse_cluster_replicas,
)
from relay.protocol.store_errors import DEFAULT_REPLICA_TIMEOUT_MS, is_transient

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_MAXLEN = 10_000
# The reporters retry on their own terms (RetryPolicy), so the client must not
# retry each command again underneath: a stalled Redis would take a minute per try.
CLIENT_OPTIONS: dict[str, Any] = {
    "decode_responses": True,
    "socket_connect_timeout": 2,
    "socket_timeout": 5,
    "retry": Retry(NoBackoff(), 0),
}
UNREACHABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
# Answers that say nothing about the events: retried. Other 4xx refuse them for good.
RETRYABLE_HTTP = frozenset({408, 429})
# Refusals that may be one event's fault, so that sending the events apart finds it.
EVENT_FAULTS = frozenset({409, 413, 422})


def _client_options(min_replicas: int, replica_timeout_ms: int) -> dict[str, Any]:
    """:data:`CLIENT_OPTIONS`, with time for a WAIT on top of the command timeout if one is made."""
    if not min_replicas:
        return CLIENT_OPTIONS
    timeout = CLIENT_OPTIONS["socket_timeout"] + replica_timeout_ms / 1000
    return {**CLIENT_OPTIONS, "socket_timeout": timeout}


def store_failure(exc: redis.exceptions.RedisError | OSError) -> TransientError | ReportError:
    """A failed publish script call as the retry loop takes it."""
    if isinstance(exc, UNREACHABLE):
        message = f"Redis unreachable: {exc}"
    else:
        message = f"Redis cannot take the report ({type(exc).__name__}): {exc}"
    return TransientError(message) if is_transient(exc) else ReportError(message)


def outcome(result: Published | KeyReused) -> Outcome[Receipt]:
    """One publication's answer as the retry loop takes it."""
    if isinstance(result, KeyReused):
        return Refused(REUSED, str(result))
    return result.receipts


def drive(client: SyncStore, rounds: PublishRounds) -> None:
    """Run the steps of ``rounds`` over a blocking client (single Redis or cluster).

    The blocking twin of :func:`relay.client.stream_publisher.drive`.
    """
    answer: list[Any] | None = None
    while True:
        try:
            step = rounds.send(answer)
        except StopIteration:
            return
        if isinstance(step, LoadScript):
            client.script_load(PUBLISH_SCRIPT)
            answer = None
            continue
        with client.pipeline(transaction=False) as pipe:
            for command in step.commands:
                pipe.execute_command(*command)
            answer = pipe.execute(raise_on_error=False)


def _one(event: ProgressEvent) -> int:
    return 1


def publications(parcels: list[Parcel]) -> list[Publication]:
    """Each parcel as a publication under its own key."""
    return [Publication(parcel.events, parcel.key) for parcel in parcels]


def build_event(
    session_id: str,
    workflow_type: str,
    step: str,
    progress: float,
    metadata: dict[str, Any] | None = None,
    status: Status | None = None,
    error: str | None = None,
    attempt: int | None = None,
    owner: str | None = None,
) -> ProgressEvent:
    """Validate reporter arguments with the same rules as every other edge.

    The event is stamped with the time of the report, not of a later retry.
    """
    fields: dict[str, Any] = {"metadata": metadata or {}, "ts": now_ms()}
    if status is not None:
        fields["status"] = status
    if error is not None:
        fields["error"] = error
    if attempt is not None:
        fields["attempt"] = attempt
    if owner is not None:
        fields["owner"] = owner
    return ProgressEvent(
        session_id=session_id, workflow_type=workflow_type, step=step, progress=progress, **fields
    )


class BlockingReporter(ABC):
    """What the blocking reporters share: ``report`` and ``session`` over ``publish``.

    Publishing is serialised, so that sessions' heartbeat threads (and other
    threads) may share one reporter and its buffer of undelivered events.
    """

    def __init__(self) -> None:
        self._sending = threading.Lock()

    def publish(self, event: ProgressEvent) -> Receipt:
        """Publish a validated event; raises ReportError once retrying is over."""
        with self._sending:
            return self._publish(event.stamped())

    @abstractmethod
    def _publish(self, event: ProgressEvent) -> Receipt:
        """Publish a stamped event, one thread at a time."""

    def report(
        self,
        session_id: str,
        workflow_type: str,
        step: str,
        progress: float,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        error: str | None = None,
        attempt: int | None = None,
        *,
        owner: str | None = None,
    ) -> str:
        """Publish one event and return its stream id; ``owner``: the user it runs for."""
        event = build_event(
            session_id, workflow_type, step, progress, metadata, status, error, attempt, owner
        )
        return self.publish(event).id

    def session(
        self,
        workflow_type: str,
        session_id: str | None = None,
        *,
        raise_on_cancel: bool = False,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        owner: str | None = None,
        plan: PlanSpec | None = None,
        parent_id: str | None = None,
        weight: float | None = None,
    ) -> ReportingSession:
        """A context manager reporting one session's steps, heartbeats and its end.

        ``heartbeat_interval`` is the seconds of silence after which a
        heartbeat repeats the latest report; 0 or None sends none. ``owner``
        is the user the session runs for, sent with each of its events.
        ``plan`` declares the session's steps, as names or ``(name, weight)`` pairs:
        its first event carries it, and each report then gives its step's own progress.
        ``parent_id`` names the session this one is a child of, ``weight`` its
        share of that parent (see :meth:`ReportingSession.child`).
        """
        return ReportingSession(
            self,
            workflow_type,
            session_id,
            raise_on_cancel=raise_on_cancel,
            heartbeat_interval=heartbeat_interval,
            owner=owner,
            plan=plan,
            parent_id=parent_id,
            weight=weight,
        )


class Reporter(BlockingReporter):
    """Publishes progress straight to Redis, blocking.

    ``redis_url`` may name a plain Redis, a cluster (``redis+cluster://``) or
    sentinels (``redis+sentinel://``), see :mod:`relay.client.redis_urls`;
    ``redis_mode`` says whether a plain URL names a cluster node (``auto``:
    ask the server when the first report goes out). With ``min_replicas``, a report counts
    as delivered once that many replicas acknowledged it within
    ``replica_timeout_ms``; until then it is retried like an unreachable Redis.

    >>> with Reporter("redis://localhost:6379/0") as reporter:
    ...     reporter.report("s1", "map", "analyzing", 45, {"details": "forests"})
    '1700000000000-0'
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_MAXLEN,
        retry: RetryPolicy | None = None,
        client: SyncStore | None = None,
        idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
        min_replicas: int = 0,
        replica_timeout_ms: int = DEFAULT_REPLICA_TIMEOUT_MS,
        redis_mode: Mode = "auto",
    ) -> None:
        super().__init__()
        # Opened by the first report, so that asking the server what it is
        # is retried as that report is, and a Redis still starting is no error.
        self._open: Callable[[], SyncStore] = (
            (lambda: client)
            if client is not None
            else partial(
                open_redis,
                redis_url,
                mode=redis_mode,
                **_client_options(min_replicas, replica_timeout_ms),
            )
        )
        self._registry = TypeRegistry()
        self._connection: SyncStore | None = None
        if client is not None:
            refuse_cluster_replicas(min_replicas, is_cluster(client))
        self._keys = Keys(prefix)
        self._maxlen = maxlen
        self._idempotency_ttl = idempotency_ttl
        self._min_replicas = min_replicas
        self._replica_timeout_ms = replica_timeout_ms
        self._retry = retry or RetryPolicy()
        self.pending = PendingBuffer(self._retry.buffer_size)

    def _publish(self, event: ProgressEvent) -> Receipt:
        (receipt,) = send_with_retry(self._send, [event], self._retry, self.pending)
        return receipt

    def _send(self, parcels: list[Parcel]) -> list[Outcome[Receipt]]:
        plan = PublishPlan(
            self._keys, publications(parcels), self._maxlen, idempotency_ttl=self._idempotency_ttl
        )
        rounds = publish_rounds(
            plan,
            self._keys,
            self._registry,
            min_replicas=self._min_replicas,
            replica_timeout_ms=self._replica_timeout_ms,
        )
        try:
            drive(self._connected(), rounds)
        except (redis.exceptions.RedisError, OSError) as exc:
            raise store_failure(exc) from None
        return [outcome(result) for result in plan.results()]

    def _connected(self) -> SyncStore:
        """The client, opened on first use."""
        if self._connection is None:
            client = self._open()
            if self._min_replicas and is_cluster(client):
                client.close()
                refuse_cluster_replicas(self._min_replicas, cluster=True)
            self._connection = client
        return self._connection

    def close(self) -> None:
        """Release the Redis connections."""
        if self._connection is not None:
            self._connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncReporter:
    """Publishes progress straight to Redis from asyncio code.

    Reports made concurrently share one script call, so many
    coroutines reporting at once cost few round trips. ``redis_url``,
    ``min_replicas`` and ``replica_timeout_ms`` are as for :class:`Reporter`.
    """

    def __init__(
        self,
        redis_url: str = DEFAULT_REDIS_URL,
        *,
        prefix: str = "",
        maxlen: int = DEFAULT_MAXLEN,
        retry: RetryPolicy | None = None,
        max_batch: int = 1_000,
        client: AsyncStore | None = None,
        idempotency_ttl: int = DEFAULT_IDEMPOTENCY_TTL,
        min_replicas: int = 0,
        replica_timeout_ms: int = DEFAULT_REPLICA_TIMEOUT_MS,
        redis_mode: Mode = "auto",
    ) -> None:
        options = _client_options(min_replicas, replica_timeout_ms)
        self._redis = client
        # Opening may ask the server what it is, which cannot be done here:
        # the first report does it, under a lock so that one client is made.
        self._open = partial(open_async_redis, redis_url, mode=redis_mode, **options)
        self._opening = asyncio.Lock()
        self._publisher = partial(
            StreamPublisher[AsyncStore],
            keys=Keys(prefix),
            maxlen=maxlen,
            idempotency_ttl=idempotency_ttl,
            min_replicas=min_replicas,
            replica_timeout_ms=replica_timeout_ms,
        )
        self._store: StreamPublisher[AsyncStore] | None = (
            None if client is None else self._publisher(client)
        )
        self._retry = retry or RetryPolicy()
        self.pending = PendingBuffer(self._retry.buffer_size)
        self._batcher: Batcher[ProgressEvent, Receipt] = Batcher(
            self._send_retrying, max_batch=max_batch, size=_one
        )

    async def report(
        self,
        session_id: str,
        workflow_type: str,
        step: str,
        progress: float,
        metadata: dict[str, Any] | None = None,
        status: Status | None = None,
        error: str | None = None,
        attempt: int | None = None,
        *,
        owner: str | None = None,
    ) -> str:
        """Publish one event and return its stream id; ``owner``: the user it runs for."""
        event = build_event(
            session_id, workflow_type, step, progress, metadata, status, error, attempt, owner
        )
        return (await self.publish(event)).id

    async def publish(self, event: ProgressEvent) -> Receipt:
        """Publish a validated event; raises ReportError once retrying is over."""
        return await self._batcher.submit(event.stamped())

    async def _send_retrying(self, events: list[ProgressEvent]) -> list[Receipt]:
        # The reports gathered here travel as one parcel, under one key.
        return await send_with_retry_async(self._send, events, self._retry, self.pending)

    async def _send(self, parcels: list[Parcel]) -> list[Outcome[Receipt]]:
        try:
            store = await self._connected()
            results = await store.write(publications(parcels))
        except (redis.exceptions.RedisError, OSError) as exc:
            raise store_failure(exc) from None
        return [outcome(result) for result in results]

    def session(
        self,
        workflow_type: str,
        session_id: str | None = None,
        *,
        raise_on_cancel: bool = False,
        heartbeat_interval: float | None = DEFAULT_HEARTBEAT_INTERVAL,
        owner: str | None = None,
        plan: PlanSpec | None = None,
        parent_id: str | None = None,
        weight: float | None = None,
    ) -> AsyncReportingSession:
        """An async context manager reporting one session's steps, heartbeats and its end.

        ``heartbeat_interval``, ``owner``, ``plan``, ``parent_id`` and ``weight`` are as
        for :meth:`BlockingReporter.session`.
        """
        return AsyncReportingSession(
            self,
            workflow_type,
            session_id,
            raise_on_cancel=raise_on_cancel,
            heartbeat_interval=heartbeat_interval,
            owner=owner,
            plan=plan,
            parent_id=parent_id,
            weight=weight,
        )

    async def _connected(self) -> StreamPublisher[AsyncStore]:
        """The publisher over the client, both made on first use."""
        if self._store is None:
            async with self._opening:
                if self._store is None:
                    self._redis = await self._open()
                    self._store = self._publisher(self._redis)
        return self._store

    async def aclose(self) -> None:
        """Wait for reports in flight, then release the Redis connections."""
        await self._batcher.drain()
        if self._redis is not None:
            await self._redis.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class HttpReporter(BlockingReporter):
    """Publishes progress through a gateway's HTTP API, blocking.

    Buffered events go out in batches within the gateway's limits: at most
    ``max_batch`` events and ``max_body_bytes`` bytes a request (the
    gateway's defaults unless told otherwise). An event the gateway refuses
    for good (a 4xx answer other than 408 and 429) is dropped from the buffer
    and counted in ``pending.refused`` by the gateway's error code.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8080",
        *,
        api_key: str | None = None,
        timeout: float = 10,
        retry: RetryPolicy | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        super().__init__()
        self._base = url.rstrip("/") + "/api/workflows/progress"
        self._api_key = api_key
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._max_batch = max_batch
        self._max_body_bytes = max_body_bytes
        self._packing = Packing(one_per_call=True, pack=self._pack)
        self.pending = PendingBuffer(self._retry.buffer_size)

    def _publish(self, event: ProgressEvent) -> Receipt:
        (receipt,) = send_with_retry(self._send, [event], self._retry, self.pending, self._packing)
        return receipt

    def _pack(self, parcels: list[Parcel]) -> list[Parcel]:
        """Unsealed parcels regrouped into requests within the gateway's limits."""
        packed: list[Parcel] = []
        chunk: list[ProgressEvent] = []
        size = 2  # the brackets of the array
        for parcel in parcels:
            if parcel.sealed:
                if chunk:
                    packed.append(Parcel(chunk))
                chunk, size = [], 2
                packed.append(parcel)
                continue
            for event in parcel.events:
                grows = len(_encoded(event)) + 1  # and its comma
                if chunk and (len(chunk) >= self._max_batch or size + grows > self._max_body_bytes):
                    packed.append(Parcel(chunk))
                    chunk, size = [], 2
                chunk.append(event)
                size += grows
        if chunk:
            packed.append(Parcel(chunk))
        return packed

    def _send(self, parcels: list[Parcel]) -> list[Outcome[Receipt]]:
        (parcel,) = parcels
        events = parcel.events
        try:
            if len(events) == 1:
                answer = self._post(self._base, _encoded(events[0]), parcel.key)
                return [[Receipt(str(answer["id"]), bool(answer.get("cancel_requested")))]]
            body = b"[" + b",".join(map(_encoded, events)) + b"]"
            answer = self._post(self._base + "/batch", body, parcel.key)
        except Refused as refused:
            return [refused]
        cancelled = set(answer.get("cancel_requested", ()))
        return [
            [
                Receipt(str(entry_id), event.session_id in cancelled)
                for entry_id, event in zip(answer["ids"], events, strict=True)
            ]
        ]

    def _post(self, url: str, data: bytes, key: str) -> dict[str, Any]:
        headers = {"content-type": "application/json", IDEMPOTENCY_HEADER: key}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            raise _http_failure(exc) from None
        except urllib.error.URLError as exc:
            refused = isinstance(exc.reason, ConnectionRefusedError)
            message = f"gateway unreachable at {url}: {exc}"
            raise TransientError(message, maybe_written=not refused) from None
        except OSError as exc:
            raise TransientError(f"gateway unreachable at {url}: {exc}") from None


def _encoded(event: ProgressEvent) -> bytes:
    return orjson.dumps(event.model_dump(exclude_none=True))


def _http_failure(exc: urllib.error.HTTPError) -> TransientError | Refused:
    """An error answer as the retry loop takes it: worth retrying, or refused for good."""
    text = exc.read().decode(errors="replace")
    message = f"gateway answered {exc.code}: {text}"
    if exc.code in RETRYABLE_HTTP:
        return TransientError(message, maybe_written=False)
    if exc.code >= 500:
        return TransientError(message)
    try:
        code = str(json.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        code = f"http_{exc.code}"
    return Refused(code, message, divisible=exc.code in EVENT_FAULTS and code != REUSED)
