"""What one gateway holds while it runs, shared by its request handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from relay.protocol.keys import Keys
from relay.server.catchup import CatchUp
from relay.server.connections import Connections
from relay.server.hub import Hub
from relay.server.ingest import Ingest
from relay.server.liveness import Liveness
from relay.server.rate_limits import PublisherLimits
from relay.server.reader import StreamReader
from relay.server.session_view import SessionView
from relay.server.settings import Settings
from relay.server.stream_store import StreamStore
from relay.server.subscriber import Subscriber

if TYPE_CHECKING:
    from relay.server.websocket import Connection


@dataclass(slots=True)
class Stats:
    """Counters kept by the HTTP side of a gateway."""

    published_by_type: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)

    @staticmethod
    def bump(counts: dict[str, int], key: str, by: int = 1) -> None:
        """Add ``by`` to one counter of ``counts``."""
        counts[key] = counts.get(key, 0) + by

    def reject(self, code: str) -> None:
        """Count one request or client frame answered with the error ``code``."""
        self.bump(self.rejected_by_reason, code)


@dataclass(slots=True)
class Gateway:
    """The gateway's parts, built once per application."""

    settings: Settings
    connections: Connections
    keys: Keys
    store: StreamStore
    hub: Hub
    view: SessionView
    ingest: Ingest
    reader: StreamReader
    catchup: CatchUp
    publisher_limits: PublisherLimits
    liveness: Liveness
    # The WebSocket connections, for the heartbeat and the shutdown.
    sockets: set[Connection] = field(default_factory=set)
    event_streams: set[Subscriber] = field(default_factory=set)
    stats: Stats = field(default_factory=Stats)


GATEWAY = web.AppKey("gateway", Gateway)
