"""Gateway configuration: one object built at the edge from flags and ``RELAY_*`` variables."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from relay.client.redis_urls import Mode, check_mode, check_redis_url
from relay.protocol.entries import DEFAULT_MAX_BATCH, DEFAULT_MAX_BODY_BYTES
from relay.protocol.idempotency import DEFAULT_IDEMPOTENCY_TTL
from relay.protocol.keys import check_prefix
from relay.protocol.liveness import DEFAULT_STALL_AFTER
from relay.protocol.store_errors import DEFAULT_REPLICA_TIMEOUT_MS
from relay.server.client_address import Network, parse_networks
from relay.server.recent_ids import DEFAULT_HISTORY_LIMIT

# Far beyond the cores of one host; a typo such as 800 is refused rather than forked.
WORKERS_LIMIT = 256

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


class Settings(BaseSettings):
    """Everything the gateway can be told; read once, then passed down.

    Each field can be set by an environment variable named ``RELAY_`` plus the
    field name in capitals (``RELAY_REDIS_URL``), or by the matching
    ``relay serve`` flag, which wins over the environment.
    """

    model_config = SettingsConfigDict(env_prefix="RELAY_", extra="ignore", frozen=True)

    redis_url: str | None = Field(
        default=None,
        description="Redis to use (redis://, rediss://, unix://, "
        "redis+cluster://host:6379,...[/0] for a Redis Cluster, or "
        "redis+sentinel://host:26379,.../service[/db] to find the primary through Sentinel); "
        "when unset the gateway runs on an in-process store.",
    )
    redis_mode: Mode = Field(
        default="auto",
        description="What a redis:// or rediss:// URL names: auto asks the server at start "
        "whether it is a cluster node (INFO cluster), single and cluster say it without asking. "
        "redis+cluster:// URLs are always a cluster, Sentinel URLs never.",
    )
    host: str = Field(default="127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port the gateway listens on.")
    workers: int = Field(
        default=1,
        ge=0,
        le=WORKERS_LIMIT,
        description="Gateway processes sharing the host and port (SO_REUSEPORT: the kernel "
        "spreads connections over them), each a full gateway of its own on the same Redis; "
        "0: one per CPU core. More than one needs redis_url; a worker that exits stops them all. "
        "With metrics_port, worker k serves its /metrics on metrics_port + k - 1.",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port on the same address that serves /metrics, and only it; when set, "
        "the main port answers 404 there. Unset: /metrics is on the main port.",
    )
    log_level: LogLevel = Field(
        default="info", description="Logging threshold: debug, info, warning or error."
    )
    log_format: LogFormat = Field(
        default="text",
        description="Log lines as plain text (text) or as one JSON object per line (json).",
    )
    demo: bool = Field(
        default=False,
        description="Also publish simulated map, character and encounter sessions, for trying "
        "the dashboard out.",
    )

    api_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Comma-separated publisher keys; when set, publishing needs one.",
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description="HS256 secret of subscriber tokens; when set, watching needs a token.",
    )
    metrics_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token /metrics asks for, on whichever port serves it; empty: none.",
    )
    max_token_lifetime: float = Field(
        default=0,
        ge=0,
        description="Seconds a subscriber token may be valid for at most, from its iat "
        "(or from now without one); longer-lived tokens are refused. 0: no limit.",
    )
    allowed_origins: str = Field(
        default="",
        description="Comma-separated browser origins allowed to connect, besides the gateway's own "
        "pages; empty allows any.",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses and CIDR networks of reverse proxies whose "
        "X-Forwarded-For names the client (for rate limits and logs); empty trusts none.",
    )
    stream_prefix: str = Field(
        default="",
        max_length=64,
        description="Prefix put before every Redis key relay uses; braces only as one hash tag "
        "(such as {app}:), which puts every key in one cluster slot.",
    )
    stream_maxlen: int = Field(
        default=10_000,
        ge=1,
        description="Approximate number of entries kept per type stream (trimmed with MAXLEN ~).",
    )

    stream_max_age: float = Field(
        default=0,
        ge=0,
        description="Seconds an entry is kept in its stream at most; 0 limits by count only.",
    )
    session_ttl: float = Field(
        default=86_400,
        gt=0,
        description="Seconds a session is remembered after its last event.",
    )
    max_sessions: int = Field(
        default=20_000, ge=1, description="Sessions one gateway remembers at most."
    )
    session_history: int = Field(
        default=DEFAULT_HISTORY_LIMIT,
        ge=1,
        le=10_000,
        description="Latest event ids remembered per session; its history endpoint lists those "
        "events only.",
    )
    stall_after: float = Field(
        default=DEFAULT_STALL_AFTER,
        ge=0,
        description="Seconds without a report after which a running session is published "
        "stalled (or completed, see infer_completion); 0: never.",
    )
    abandon_after: float = Field(
        default=0,
        ge=0,
        description="Seconds a session stays stalled before it is published failed "
        '("worker stopped reporting"); 0: never.',
    )
    infer_completion: bool = Field(
        default=True,
        description="A session that falls silent at progress 100 is published completed, "
        'with metadata "inferred": true, rather than stalled.',
    )
    replay_limit: int = Field(
        default=1_000,
        ge=1,
        description="Most stream entries scanned to replay a resumed subscription.",
    )
    # Each replay holds a connection of the command pool (100 by default in
    # redis-py) while it reads, beside publishes and session reads.
    max_concurrent_replays: int = Field(
        default=8,
        ge=1,
        le=64,
        description="Resumed subscriptions whose history is read or held at once; others wait.",
    )
    replay_wait: float = Field(
        default=10.0,
        gt=0,
        description=(
            "Seconds a resumed subscription waits for the stream reader to start "
            "before answering recovered false."
        ),
    )
    read_count: int = Field(
        default=500, ge=1, description="Most entries the reader takes per stream per XREAD."
    )
    read_block_ms: int = Field(
        default=30_000,
        ge=1,
        description=(
            "Milliseconds one blocked XREAD of the reader waits before it is sent again. "
            "A read whose streams change is sent again at once, so this only sets what "
            "an idle reader costs."
        ),
    )
    discovery_interval: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between discovery ticks: a run id check and one bounded SCAN step.",
    )

    max_body_bytes: int = Field(
        default=DEFAULT_MAX_BODY_BYTES, ge=1024, description="Largest HTTP request body accepted."
    )
    max_batch: int = Field(
        default=DEFAULT_MAX_BATCH, ge=1, description="Most events in one batch request."
    )
    min_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas that must acknowledge each publish (Redis WAIT) before it is "
        "answered; fewer within replica_timeout_ms answer 503. 0: no waiting.",
    )
    replica_timeout_ms: int = Field(
        default=DEFAULT_REPLICA_TIMEOUT_MS,
        ge=1,
        description="Milliseconds a publish waits for min_replicas replicas to acknowledge it.",
    )
    idempotency_ttl: int = Field(
        default=DEFAULT_IDEMPOTENCY_TTL,
        ge=1,
        description="Seconds an Idempotency-Key is remembered: a retry within it writes nothing.",
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a connection may take to send a request's headers, counted from "
        "when it opened or got its previous answer; an idle keep-alive connection is closed "
        "after as long.",
    )
    body_timeout: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request body; slower ones get 408.",
    )
    max_ws_frame_bytes: int = Field(
        default=65_536, ge=1024, description="Largest WebSocket frame a client may send."
    )
    outbox_limit: int = Field(
        default=5_000,
        ge=1,
        description="Events queued for one subscriber before its queue is conflated; at least "
        "twice read_count.",
    )
    send_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a subscriber's socket may accept nothing before it is closed.",
    )
    max_subscriptions: int = Field(
        default=100, ge=1, description="Subscriptions one connection may hold."
    )
    ws_heartbeat: float = Field(
        default=30.0,
        gt=0,
        description=(
            "Seconds between WebSocket pings to each client; one that has not"
            " answered by the next ping is closed."
        ),
    )
    max_connections: int = Field(
        default=20_000,
        ge=1,
        description="WebSocket, SSE and Socket.IO connections one gateway accepts.",
    )
    ws_rate: float = Field(
        default=50, ge=0, description="Frames a second one WebSocket client may send (0: no limit)."
    )
    ws_burst: int = Field(default=100, ge=1, description="Frames a client may send at once.")
    publish_rate: float = Field(
        default=100_000,
        ge=0,
        description="Events a second one publisher (key or address) may publish (0: no limit).",
    )
    publish_burst: int = Field(
        default=200_000, ge=1, description="Events one publisher may publish at once."
    )
    auth_timeout: float = Field(
        default=10.0, gt=0, description="Seconds a WebSocket client has to present its token."
    )
    sse_keepalive: float = Field(
        default=15.0, gt=0, description="Seconds between keep-alive comments on event streams."
    )
    socketio_ping_interval: float = Field(
        default=25.0, gt=0, description="Seconds between Engine.IO pings to each Socket.IO client."
    )
    socketio_ping_timeout: float = Field(
        default=20.0,
        gt=0,
        description="Seconds a Socket.IO client has to answer a ping before it is dropped.",
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, description="Retry-After sent with 503 answers while Redis is down."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_parse(cls, value: str) -> str:
        parse_networks(value)
        return value

    @field_validator("stream_prefix")
    @classmethod
    def _prefix_keeps_slots(cls, value: str) -> str:
        # Braces that would split a stream from its companions on a cluster:
        # checked here so the start fails with its reason.
        return check_prefix(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url_parses(cls, value: str | None) -> str | None:
        # Checked here rather than left to the Redis client, so a mistyped
        # URL stops the start with one line instead of a traceback. The value
        # is never quoted back: it may hold a password.
        if value:
            check_redis_url(value)
        return value

    @model_validator(mode="after")
    def _outbox_holds_two_reads(self) -> Settings:
        # One XREAD batch is routed in one go; an outbox smaller than two of
        # them would conflate a perfectly healthy subscriber during a burst.
        if self.outbox_limit < 2 * self.read_count:
            raise ValueError(
                f"outbox_limit ({self.outbox_limit}) must be at least twice "
                f"read_count ({self.read_count})"
            )
        return self

    @model_validator(mode="after")
    def _metrics_port_is_another(self) -> Settings:
        # Port 0 asks the system for a free port, so two zeros never collide.
        if self.port and self.metrics_port == self.port:
            raise ValueError(f"metrics_port must differ from port ({self.port})")
        return self

    @field_validator("workers")
    @classmethod
    def _workers_share_redis(cls, value: int, info: ValidationInfo) -> int:
        # Each worker is a process of its own: an in-process store would be one per
        # worker, and subscribers of one would never see what another accepted.
        # A redis_url that failed its own check is told about by that check alone.
        if value != 1 and "redis_url" in info.data and not info.data["redis_url"]:
            raise ValueError(
                "more than one worker needs a redis_url: the embedded in-process store "
                "cannot be shared between processes"
            )
        return value

    @model_validator(mode="after")
    def _worker_metrics_ports_fit(self) -> Settings:
        if self.metrics_port and self.worker_count > 1:
            last = self.metrics_port + self.worker_count - 1
            if last > 65535:
                raise ValueError(
                    f"metrics_port + workers - 1 ({last}) must be at most 65535: "
                    "each worker serves its metrics on a port of its own"
                )
            if self.port and self.metrics_port <= self.port <= last:
                raise ValueError(
                    f"port ({self.port}) must lie outside the workers' metrics ports "
                    f"({self.metrics_port}-{last})"
                )
        return self

    @model_validator(mode="after")
    def _mode_fits_the_url(self) -> Settings:
        if self.redis_url:
            check_mode(self.redis_url, self.redis_mode)
        return self

    @model_validator(mode="after")
    def _replicas_need_redis(self) -> Settings:
        if self.min_replicas and self.embedded:
            raise ValueError("min_replicas needs a redis_url: the in-process store has no replicas")
        return self

    @property
    def metrics_apart(self) -> bool:
        """True when /metrics is served on a port of its own rather than the main one."""
        return self.metrics_port is not None

    @property
    def worker_count(self) -> int:
        """How many gateway processes serve: ``workers``, or one per CPU core when it is 0."""
        return self.workers or os.cpu_count() or 1

    @property
    def publisher_keys(self) -> tuple[str, ...]:
        """The configured API keys."""
        return _split(self.api_keys.get_secret_value())

    @property
    def development(self) -> bool:
        """True when neither publisher keys nor a token secret is configured: all is open."""
        return not self.publisher_keys and self.secret is None

    @property
    def origins(self) -> tuple[str, ...]:
        """The browser origins allowed to connect; empty means any."""
        return _split(self.allowed_origins)

    @property
    def proxies(self) -> tuple[Network, ...]:
        """The trusted reverse proxies, as networks."""
        return parse_networks(self.trusted_proxies)

    @property
    def secret(self) -> str | None:
        """The token secret in clear, for verifying tokens only."""
        return self.token_secret.get_secret_value() if self.token_secret else None

    @property
    def embedded(self) -> bool:
        """True when no Redis is configured and the in-process store is used."""
        return not self.redis_url


# Cached: publisher_keys is read on every publish, and the settings never change.
@lru_cache(maxsize=16)
def _split(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())
