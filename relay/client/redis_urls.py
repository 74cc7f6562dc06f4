"""Redis URLs, plain, of a cluster or through Sentinel, and the clients they make.

One place for the gateway and the reporters alike. A plain URL (``redis://``,
``rediss://``, ``unix://``) is handed to redis-py as it is. A cluster URL names
some of its nodes, the seeds from which the client learns the rest::

    redis+cluster://[[username]:password@]host[:port][,host[:port]...][/0]
    rediss+cluster://...   (the same, over TLS)

A seed without a port is on 6379; a cluster has database 0 only. A Sentinel
URL names the sentinels and the service they watch::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service[/db]
        [?sentinel_username=...&sentinel_password=...]

The user and password before ``@`` are the primary's (and its replicas');
the sentinels' own credentials, when they have any, go in the query. A host
without a port is on 26379; an IPv6 address goes in brackets. The client made
from it asks the sentinels for the current primary whenever it connects, so
after a failover it reconnects to the promoted replica by itself.

Which kind of server a URL names is decided by a *mode*: ``auto`` (the
default) takes a cluster URL for a cluster, a Sentinel URL for a single
primary, and asks the server of a plain ``redis://`` or ``rediss://`` URL
(``INFO cluster``) whether it is a node of a cluster; ``single`` and
``cluster`` say it without asking. :func:`open_redis` and
:func:`open_async_redis` decide and open the client in one call.

Errors never quote the URL: it may hold a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

SENTINEL_SCHEME = "redis+sentinel://"
CLUSTER_SCHEME = "redis+cluster://"
TLS_CLUSTER_SCHEME = "rediss+cluster://"
UNIX_SCHEME = "unix://"
# Every scheme a Redis URL may start with, compared without regard to case.
URL_SCHEMES = (
    "redis://",
    "rediss://",
    UNIX_SCHEME,
    CLUSTER_SCHEME,
    TLS_CLUSTER_SCHEME,
    SENTINEL_SCHEME,
)
DEFAULT_SENTINEL_PORT = 26379
DEFAULT_PORT = 6379
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
# A sentinel answers at once; one that does not must not hold up asking the others.
SENTINEL_TIMEOUT = 1.0
REDACTED = "[redacted]"
# The password of ``user:password@``, and the value of any ``...password=`` option;
# neither runs past white space, so that they apply to log lines too.
_PASSWORDS = (
    (re.compile(r"(://[^:/@?#\s]*:)[^/?#@\s]+(@)"), rf"\g<1>{REDACTED}\g<2>"),
    (re.compile(r"(password=)[^&#\s\"'<>;,]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
)

SyncStore: TypeAlias = redis.Redis | redis.cluster.RedisCluster
"""A blocking client of a single Redis (perhaps through Sentinel) or of a cluster."""
AsyncStore: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster
"""An asyncio client of a single Redis (perhaps through Sentinel) or of a cluster."""
Mode = Literal["auto", "single", "cluster"]
"""How the kind of server is decided: ``auto`` asks a plain URL's server."""
Kind = Literal["single", "cluster"]
"""The kind of server a client is made for."""
MODES: tuple[Mode, ...] = get_args(Mode)


@dataclass(frozen=True, slots=True)
class ClusterUrl:
    """What a ``redis+cluster://`` URL says; the password is left out of its repr."""

    seeds: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """What a ``redis+sentinel://`` URL says; passwords are left out of its repr."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def redacted(url: str) -> str:
    """``url`` with its passwords replaced by ``[redacted]``, for saying where one connects."""
    for pattern, replacement in _PASSWORDS:
        url = pattern.sub(replacement, url)
    return url


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` is of the ``redis+sentinel://`` form."""
    return url[: len(SENTINEL_SCHEME)].lower() == SENTINEL_SCHEME


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` is of the ``redis+cluster://`` or ``rediss+cluster://`` form."""
    return url.lower().startswith((CLUSTER_SCHEME, TLS_CLUSTER_SCHEME))


def check_redis_url(url: str) -> None:
    """Raise ValueError, without quoting ``url``, when it is no Redis URL of a known form."""
    if not url.lower().startswith(URL_SCHEMES):
        raise ValueError(
            f"not a Redis URL: it must start with {', '.join(URL_SCHEMES[:-1])} "
            f"or {URL_SCHEMES[-1]}"
        )
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    elif is_cluster_url(url):
        parse_cluster_url(url)
    else:
        urlsplit(url).port  # noqa: B018 - raises ValueError on a port that is no number


def parse_sentinel_url(url: str) -> SentinelUrl:
    """The parts of a ``redis+sentinel://`` URL; ValueError saying what is wrong otherwise."""
    if not is_sentinel_url(url):
        raise ValueError(f"not a Sentinel URL: it must start with {SENTINEL_SCHEME}")
    rest = url[len(SENTINEL_SCHEME) :]
    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ValueError("a Sentinel URL has no #fragment")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo)
    sentinels = _addresses(hosts, "sentinel address", DEFAULT_SENTINEL_PORT)
    service_name, db = _service(path)
    options = _options(query)
    return SentinelUrl(
        sentinels=sentinels,
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=options.get("sentinel_password"),
    )


def parse_cluster_url(url: str) -> ClusterUrl:
    """The parts of a ``redis+cluster://`` URL; ValueError saying what is wrong otherwise."""
    if not is_cluster_url(url):
        raise ValueError(
            f"not a cluster URL: it must start with {CLUSTER_SCHEME} or {TLS_CLUSTER_SCHEME}"
        )
    tls = url.lower().startswith(TLS_CLUSTER_SCHEME)
    rest = url.partition("://")[2]
    if "?" in rest or "#" in rest:
        raise ValueError("a cluster URL takes no ?options or #fragment")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    username, password = _credentials(userinfo)
    db_text = path.rstrip("/")
    if db_text not in ("", "0"):
        raise ValueError("a Redis Cluster has database 0 only: end the URL with /0 or nothing")
    return ClusterUrl(
        seeds=_addresses(hosts, "cluster address", DEFAULT_PORT),
        username=username,
        password=password,
        tls=tls,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if colon and password else None


def _addresses(hosts: str, what: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """The comma-separated ``host[:port]`` list of a URL; ``what`` names one in errors."""
    return tuple(
        _address(part, f"{what} {number}", default_port)
        for number, part in enumerate(hosts.split(","), start=1)
    )


def _address(text: str, where: str, default_port: int) -> tuple[str, int]:
    """One ``host[:port]``; ``where`` says which, for errors."""
    brackets = f"{where}: an IPv6 address must be in brackets, as [::1]:{default_port}"
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(brackets)
        port_text = after[1:] if after else ""
    else:
        if text.count(":") > 1:
            raise ValueError(brackets)
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{where} has no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{where} has a port that is not a number from 1 to 65535")
    return host, int(port_text)


def _service(path: str) -> tuple[str, int]:
    service, _, db_text = path.partition("/")
    service = unquote(service)
    if not service:
        raise ValueError("a Sentinel URL names its service after the hosts: .../service[/db]")
    db_text = db_text.rstrip("/")
    if not db_text:
        return service, 0
    if not db_text.isdigit():
        raise ValueError("the database after the service name must be a number")
    return service, int(db_text)


def _options(query: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if name not in SENTINEL_OPTIONS:
            known = " and ".join(sorted(SENTINEL_OPTIONS))
            raise ValueError(f"unknown Sentinel URL option {name!r}: it takes {known}")
        options[name] = value
    return options


def _sentinel_client(
    parsed: SentinelUrl,
    options: dict[str, Any],
    sentinel_class: type[Any],
    pool_class: type[Any],
    client_class: type[Any],
) -> Any:
    """A client of the primary of ``parsed``'s service, from either redis-py flavour's classes."""
    if options.pop("single_connection_client", False):
        # redis-py's single-connection client reconnects its one connection
        # to the address it had, never asking the sentinels again: after a
        # failover it would knock at the dead primary for ever.
        raise ValueError(
            "single_connection_client does not follow a failover; use max_connections=1"
        )
    # Asking the sentinels is a loop over all of them already: retrying one is no use.
    sentinel_kwargs = {
        "socket_connect_timeout": SENTINEL_TIMEOUT,
        "socket_timeout": SENTINEL_TIMEOUT,
        "username": parsed.sentinel_username,
        "password": parsed.sentinel_password,
        "retry": Retry(NoBackoff(), 0),
    }
    sentinel = sentinel_class(list(parsed.sentinels), sentinel_kwargs=sentinel_kwargs, **options)
    primary = {"db": parsed.db, "username": parsed.username, "password": parsed.password}
    pool = pool_class(parsed.service_name, sentinel, **{**sentinel.connection_kwargs, **primary})
    client = client_class(connection_pool=pool)
    # As Redis.from_pool does: the client owns the pool made for it.
    client.auto_close_connection_pool = True
    return client


class _SyncPrimary(redis.Redis):
    """A client of the primary a Sentinel names; closing it closes the sentinel clients too."""

    def close(self) -> None:
        """Release the primary's connections, then the sentinels'."""
        super().close()
        pool = self.connection_pool
        if isinstance(pool, redis.sentinel.SentinelConnectionPool):
            pool.sentinel_manager.close()


class _AsyncPrimary(redis.asyncio.Redis):
    """The asyncio twin of :class:`_SyncPrimary`."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Release the primary's connections, then the sentinels'."""
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, redis.asyncio.sentinel.SentinelConnectionPool):
            await pool.sentinel_manager.aclose()


def redis_client(url: str, **options: Any) -> redis.Redis:
    """A blocking client for ``url``, plain or Sentinel; ``options`` as redis-py takes them.

    Through Sentinel, every connection the pool opens goes to the primary the
    sentinels name at that moment. ``single_connection_client`` is refused
    there (it would not follow a failover); ``max_connections=1`` keeps to
    one connection instead.
    """
    if not is_sentinel_url(url):
        return redis.Redis.from_url(url, **options)
    sentinel = redis.sentinel
    client: redis.Redis = _sentinel_client(
        parse_sentinel_url(url),
        options,
        sentinel.Sentinel,
        sentinel.SentinelConnectionPool,
        _SyncPrimary,
    )
    return client


def async_redis_client(url: str, **options: Any) -> redis.asyncio.Redis:
    """An asyncio client for ``url``, plain or Sentinel; as :func:`redis_client`, for asyncio."""
    if not is_sentinel_url(url):
        return redis.asyncio.Redis.from_url(url, **options)
    sentinel = redis.asyncio.sentinel
    client: redis.asyncio.Redis = _sentinel_client(
        parse_sentinel_url(url),
        options,
        sentinel.Sentinel,
        sentinel.SentinelConnectionPool,
        _AsyncPrimary,
    )
    return client


def check_mode(url: str, mode: Mode = "auto") -> Kind | None:
    """The kind of server ``url`` names in ``mode`` as far as the URL says; None: ask it.

    ValueError, without quoting ``url``, when the two disagree: a cluster
    URL in ``single`` mode, a Sentinel or ``unix://`` URL in ``cluster`` mode.
    """
    if mode not in MODES:
        raise ValueError(f"unknown Redis mode {mode!r}: it is one of {', '.join(MODES)}")
    if is_cluster_url(url):
        if mode == "single":
            raise ValueError("a redis+cluster:// URL names a cluster: it cannot be used as single")
        return "cluster"
    if is_sentinel_url(url):
        if mode == "cluster":
            raise ValueError("a Sentinel URL names one primary: it cannot be used as a cluster")
        return "single"
    if url.lower().startswith(UNIX_SCHEME):
        if mode == "cluster":
            raise ValueError("a Redis Cluster is not reached through a unix socket")
        return "single"
    return None if mode == "auto" else mode


def _cluster_options(options: dict[str, Any], *, blocking: bool) -> dict[str, Any]:
    """``options`` as a cluster client takes them, each one it cannot take dealt with on purpose.

    ``max_connections`` stays: in a cluster it caps each node's pool.
    """
    options = dict(options)
    _only_db_zero(options.pop("db", 0))
    if options.pop("single_connection_client", False):
        # A cluster client needs a connection per node, and one to learn the slots.
        raise ValueError("a cluster client cannot keep to one connection; use max_connections=1")
    if blocking:
        # redis-py's blocking cluster client would drop it without a word.
        options.pop("health_check_interval", None)
    return options


def _only_db_zero(db: object) -> None:
    if str(db) != "0":
        raise ValueError("a Redis Cluster has database 0 only")


def _plain_db(url: str) -> str:
    """The database a plain URL names, by its path or its ``db`` option (``0`` when none)."""
    parts = urlsplit(url)
    return dict(parse_qsl(parts.query)).get("db") or parts.path.strip("/") or "0"


def redis_store(url: str, kind: Kind, **options: Any) -> SyncStore:
    """A blocking client of ``kind`` for ``url``, without asking the server anything.

    ``options`` are as redis-py takes them; for a cluster, ``db`` must be 0,
    ``single_connection_client`` is refused and ``health_check_interval``
    left out (the blocking cluster client has none).
    """
    if check_mode(url, kind) == "single":
        return redis_client(url, **options)
    options = _cluster_options(options, blocking=True)
    if not is_cluster_url(url):
        _only_db_zero(_plain_db(url))
        return redis.cluster.RedisCluster.from_url(url, **options)
    parsed = parse_cluster_url(url)
    # redis-py leaves the blocking ClusterNode's constructor unannotated.
    seeds = [redis.cluster.ClusterNode(h, p) for h, p in parsed.seeds]  # type: ignore[no-untyped-call]
    return redis.cluster.RedisCluster(
        startup_nodes=seeds,
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.tls,
        **options,
    )


def async_redis_store(url: str, kind: Kind, **options: Any) -> AsyncStore:
    """An asyncio client of ``kind`` for ``url``; as :func:`redis_store`, for asyncio.

    The asyncio cluster client keeps ``health_check_interval``.
    """
    if check_mode(url, kind) == "single":
        return async_redis_client(url, **options)
    options = _cluster_options(options, blocking=False)
    if not is_cluster_url(url):
        _only_db_zero(_plain_db(url))
        return redis.asyncio.cluster.RedisCluster.from_url(url, **options)
    parsed = parse_cluster_url(url)
    cluster = redis.asyncio.cluster
    return cluster.RedisCluster(
        startup_nodes=[cluster.ClusterNode(host, port) for host, port in parsed.seeds],
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.tls,
        **options,
    )


def _says_cluster(info: dict[str, Any]) -> bool:
    return str(info.get("cluster_enabled")) == "1"


def _stay_on_db_zero(connection_kwargs: dict[str, Any]) -> None:
    """Keep a probe in database 0, whatever database the URL names.

    A cluster node refuses to SELECT any other, which would pass it for a
    single Redis; ``INFO`` answers the same in every database.
    """
    connection_kwargs["db"] = 0


def detect_kind(url: str, mode: Mode = "auto", **options: Any) -> Kind:
    """The kind of server ``url`` names in ``mode``, asking it with ``INFO cluster`` if need be.

    The probe's connection is closed before this returns. A server that
    refuses ``INFO`` (an ACL, say) is taken for a single Redis; one that cannot
    be reached raises redis-py's ConnectionError or TimeoutError.
    """
    kind = check_mode(url, mode)
    if kind is not None:
        return kind
    # One attempt: whoever asked retries as it retries anything else.
    probe = redis.Redis.from_url(url, **{**options, "retry": Retry(NoBackoff(), 0)})
    _stay_on_db_zero(probe.connection_pool.connection_kwargs)
    try:
        return "cluster" if _says_cluster(probe.info("cluster")) else "single"
    except ResponseError:
        return "single"
    finally:
        probe.close()


async def async_detect_kind(url: str, mode: Mode = "auto", **options: Any) -> Kind:
    """The asyncio twin of :func:`detect_kind`."""
    kind = check_mode(url, mode)
    if kind is not None:
        return kind
    no_retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
    probe = redis.asyncio.Redis.from_url(url, **{**options, "retry": no_retry})
    _stay_on_db_zero(probe.connection_pool.connection_kwargs)
    try:
        return "cluster" if _says_cluster(await probe.info("cluster")) else "single"
    except ResponseError:
        return "single"
    finally:
        await probe.aclose()


def open_redis(url: str, *, mode: Mode = "auto", **options: Any) -> SyncStore:
    """A blocking client for ``url``: single, Sentinel or cluster, as ``mode`` decides.

    In ``auto`` mode a plain URL's server is asked (see :func:`detect_kind`).
    """
    return redis_store(url, detect_kind(url, mode, **options), **options)


async def open_async_redis(url: str, *, mode: Mode = "auto", **options: Any) -> AsyncStore:
    """An asyncio client for ``url``, as :func:`open_redis` makes a blocking one."""
    return async_redis_store(url, await async_detect_kind(url, mode, **options), **options)


def is_cluster(client: SyncStore | AsyncStore) -> bool:
    """Whether ``client`` is a cluster client, of either flavour."""
    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)
