"""Redis URLs, plain or through Sentinel, and the clients they make: one place for both sides.

A plain URL (``redis://``, ``rediss://``, ``unix://``) is handed to redis-py as
it is. A Sentinel URL names the sentinels and the service they watch::

    redis+sentinel://[[username]:password@]host[:port][,host[:port]...]/service[/db]
        [?sentinel_username=...&sentinel_password=...]

The user and password before ``@`` are the primary's (and its replicas');
the sentinels' own credentials, when they have any, go in the query. A host
without a port is on 26379; an IPv6 address goes in brackets. The client made
from it asks the sentinels for the current primary whenever it connects, so
after a failover it reconnects to the promoted replica by itself.

Errors never quote the URL: it may hold a password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

SENTINEL_SCHEME = "redis+sentinel://"
# Every scheme a Redis URL may start with, compared without regard to case.
URL_SCHEMES = ("redis://", "rediss://", "unix://", SENTINEL_SCHEME)
DEFAULT_SENTINEL_PORT = 26379
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


def check_redis_url(url: str) -> None:
    """Raise ValueError, without quoting ``url``, when it is no Redis URL of a known form."""
    if not url.lower().startswith(URL_SCHEMES):
        raise ValueError(
            f"not a Redis URL: it must start with {', '.join(URL_SCHEMES[:-1])} "
            f"or {URL_SCHEMES[-1]}"
        )
    if is_sentinel_url(url):
        parse_sentinel_url(url)
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
    sentinels = tuple(
        _address(part, number) for number, part in enumerate(hosts.split(","), start=1)
    )
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


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) if colon and password else None


def _address(text: str, number: int) -> tuple[str, int]:
    """One ``host[:port]`` of the sentinel list (``number`` counts from 1, for errors)."""
    where = f"sentinel address {number}"
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError(f"{where}: an IPv6 address must be in brackets, as [::1]:26379")
        port_text = after[1:] if after else ""
    else:
        if text.count(":") > 1:
            raise ValueError(f"{where}: an IPv6 address must be in brackets, as [::1]:26379")
        host, _, port_text = text.partition(":")
    if not host:
        raise ValueError(f"{where} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
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
