"""The aiohttp application: routes, the reader task, and a clean shutdown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web
from redis.exceptions import RedisError

from relay.protocol.keys import Keys
from relay.server import (
    http_publish,
    http_sessions,
    metrics,
    openapi,
    socketio,
    sse,
    static_files,
    websocket,
)
from relay.server.catchup import CatchUp
from relay.server.connections import Connections, open_connections
from relay.server.cors import add_cors_headers, preflight
from relay.server.errors import error_middleware
from relay.server.gateway import GATEWAY, Gateway
from relay.server.hub import Hub
from relay.server.ingest import Ingest
from relay.server.liveness import Liveness, LivenessRules
from relay.server.rate_limits import PublisherLimits
from relay.server.reader import StreamReader
from relay.server.session_view import SessionView
from relay.server.settings import Settings
from relay.server.stream_store import StreamStore
from relay.server.subscriber import CLOSE_GOING_AWAY

logger = logging.getLogger(__name__)

READER_START_TIMEOUT = 5.0


def build_relay(settings: Settings, connections: Connections | None = None) -> Gateway:
    """Wire the gateway's parts together; nothing touches the network yet.

    Without ``connections``, they are opened as the URL and ``redis_mode`` say
    without asking the server; ``await connect(settings)`` (in
    :mod:`relay.server.connections`) asks a plain URL's server whether it is a
    cluster node.
    """
    connections = connections or open_connections(settings)
    keys = Keys(settings.stream_prefix)
    session_ttl = int(settings.session_ttl)
    store = StreamStore(
        connections.commands,
        keys,
        maxlen=settings.stream_maxlen,
        cancel_ttl=session_ttl,
        idempotency_ttl=settings.idempotency_ttl,
        min_replicas=settings.min_replicas,
        replica_timeout_ms=settings.replica_timeout_ms,
    )
    hub = Hub()
    view = SessionView(
        ttl_ms=session_ttl * 1000,
        max_sessions=settings.max_sessions,
        history_limit=settings.session_history,
    )
    ingest = Ingest(keys, hub, view)
    reader = StreamReader(
        store,
        connections.reader,
        ingest,
        count=settings.read_count,
        block_ms=settings.read_block_ms,
        discovery_interval=settings.discovery_interval,
    )
    catchup = CatchUp(
        hub=hub,
        store=store,
        keys=keys,
        reader=reader,
        view=view,
        replay_limit=settings.replay_limit,
        max_replays=settings.max_concurrent_replays,
        replay_wait=settings.replay_wait,
    )
    limits = PublisherLimits(settings.publish_rate, settings.publish_burst)
    rules = LivenessRules(settings.stall_after, settings.abandon_after, settings.infer_completion)
    liveness = Liveness(rules, store, view)
    return Gateway(
        settings, connections, keys, store, hub, view, ingest, reader, catchup, limits, liveness
    )


def _application(gateway: Gateway) -> web.Application:
    """An application answering for ``gateway``, every failure a JSON error; no routes yet."""
    settings = gateway.settings
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            error_middleware(
                max_body=settings.max_body_bytes,
                retry_after=settings.retry_after_seconds,
                on_error=gateway.stats.reject,
            ),
        ],
    )
    app[GATEWAY] = gateway
    return app


def _add_metrics(app: web.Application) -> None:
    app[metrics.METRICS_REGISTRY] = metrics.registry_for(app[GATEWAY])
    app.add_routes(metrics.routes)


def create_app(settings: Settings, connections: Connections | None = None) -> web.Application:
    """The gateway application for ``settings``.

    It serves ``/metrics`` too, unless ``metrics_port`` is set: then
    :func:`create_metrics_app` serves it on that port instead.
    """
    app = _application(build_relay(settings, connections))
    app.add_routes(http_publish.routes)
    app.add_routes(http_sessions.routes)
    if not settings.metrics_apart:
        _add_metrics(app)
    app.add_routes(openapi.routes)
    app.add_routes(static_files.routes)
    app.add_routes(websocket.routes)
    app.add_routes(sse.routes)
    socketio.setup(app)
    for resource in list(app.router.resources()):
        if isinstance(resource, web.Resource):  # static files need no preflight
            resource.add_route("OPTIONS", preflight)
    app.on_response_prepare.append(add_cors_headers)
    app.cleanup_ctx.append(_run_reader)
    app.cleanup_ctx.append(_watch_sends)
    app.cleanup_ctx.append(_ping_sockets)
    app.cleanup_ctx.append(_ping_sessions)
    if settings.stream_max_age > 0:
        app.cleanup_ctx.append(_trim_by_age)
    if app[GATEWAY].liveness.rules.enabled:
        app.cleanup_ctx.append(_check_liveness)
    app.on_shutdown.append(_close_sockets)
    return app


def create_metrics_app(app: web.Application) -> web.Application:
    """An application serving only ``/metrics``, of the gateway of ``app``, for its metrics port.

    It starts and stops nothing of its own: the gateway's parts run with ``app``.
    """
    metrics_app = _application(app[GATEWAY])
    _add_metrics(metrics_app)
    return metrics_app


async def _run_reader(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    if not gateway.settings.publisher_keys or gateway.settings.secret is None:
        logger.warning(
            "running open: %s; set RELAY_API_KEYS and RELAY_TOKEN_SECRET outside development",
            " and ".join(
                part
                for part, missing in (
                    ("anyone may publish", not gateway.settings.publisher_keys),
                    ("anyone may watch everything", gateway.settings.secret is None),
                )
                if missing
            ),
        )
    if gateway.settings.embedded:
        logger.warning(
            "no Redis configured: running on the embedded in-process store "
            "(one instance, nothing kept across restarts)"
        )
    # Supervised: if the reader's task ever ends, readiness says so and it is started again.
    task = asyncio.create_task(gateway.reader.supervise(), name="relay-reader-supervisor")
    try:
        # Publishes accepted once we serve must not be taken for history.
        async with asyncio.timeout(READER_START_TIMEOUT):
            await gateway.reader.started.wait()
    except TimeoutError:
        logger.warning(
            "store not reachable at start (%s); serving anyway, the reader keeps trying",
            gateway.reader.last_error or f"no answer within {READER_START_TIMEOUT:g}s",
        )
    yield
    await gateway.reader.stop(task)
    await gateway.connections.aclose()


async def _trim_by_age(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    age_ms = int(gateway.settings.stream_max_age * 1000)
    # Often enough that entries outlive the limit by a tenth at most, at most once a minute.
    interval = min(max(gateway.settings.stream_max_age / 10, 0.1), 60.0)

    async def trim() -> None:
        try:
            await gateway.store.trim_older_than(list(gateway.reader.positions), age_ms)
        except (RedisError, OSError) as exc:
            logger.warning("trimming streams by age failed: %s", exc)

    async with periodically(interval, trim, "relay-age-trim"):
        yield


async def _check_liveness(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    liveness = gateway.liveness

    async def check() -> None:
        # While the reader does not follow the streams the view stands still,
        # and every session in it would look silent.
        if gateway.reader.problem is None:
            await liveness.check()

    async with periodically(liveness.rules.interval, check, "relay-liveness"):
        yield


async def _watch_sends(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    clock = asyncio.get_running_loop().time

    async def check() -> None:
        gateway.hub.check_sends(clock())

    async with periodically(min(1.0, gateway.settings.send_timeout / 2), check, "relay-sends"):
        yield


async def _ping_sockets(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]

    async def ping() -> None:
        websocket.ping_all(gateway)

    async with periodically(gateway.settings.ws_heartbeat, ping, "relay-ws-heartbeat"):
        yield


async def _ping_sessions(app: web.Application) -> AsyncIterator[None]:
    sessions = app[socketio.SESSIONS]

    async def ping() -> None:
        await socketio.ping_all(sessions)

    interval = app[GATEWAY].settings.socketio_ping_interval
    async with periodically(interval, ping, "relay-socketio-heartbeat"):
        yield


@asynccontextmanager
async def periodically(
    interval: float, action: Callable[[], Awaitable[None]], name: str
) -> AsyncIterator[None]:
    """Run ``action`` every ``interval`` seconds while the context is open.

    A failing run is logged with its traceback and the next one goes ahead:
    one bug must not silently end a task the gateway relies on for as long as
    it serves.
    """

    async def forever() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await action()
            except Exception:
                logger.exception("%s failed; running it again in %.1fs", name, interval)

    task = asyncio.create_task(forever(), name=name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


async def _close_sockets(app: web.Application) -> None:
    for stream in app[GATEWAY].event_streams:
        stream.close_later(CLOSE_GOING_AWAY, "server shutting down")
    sockets = [connection.ws for connection in app[GATEWAY].sockets]
    await asyncio.gather(
        *(sock.close(code=CLOSE_GOING_AWAY, message=b"server shutting down") for sock in sockets),
        return_exceptions=True,
    )
