"""The address of the client behind a request, through trusted reverse proxies.

A proxy in front of the gateway is the request's peer, so every client would
share the proxy's address. When the peer is one of the configured proxies
(``RELAY_TRUSTED_PROXIES``), the client is read from ``X-Forwarded-For`` by
the rightmost-untrusted rule: each proxy appends the address it received the
request from, so the entries are walked from the right, trusted proxies are
skipped, and the first other address is the client. Entries left of it were
written by the client itself and are never believed. A header from a peer that
is not a trusted proxy is ignored entirely.
"""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from aiohttp import web

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address

UNKNOWN = "?"
"""The address given for a peer without one (a Unix socket, a closed transport)."""

_CLIENT_ADDRESS = web.RequestKey("client_address", str)


@lru_cache(maxsize=8)
def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses and CIDR networks; raises ValueError on a malformed one.

    A bare address is a network of one. Host bits set in a network
    (``10.0.0.1/8``) are refused, as they most likely hide a typo.
    """
    return tuple(ip_network(part.strip()) for part in text.split(",") if part.strip())


def _address(text: str) -> Address | None:
    try:
        address = ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 peers as IPv4-mapped IPv6 addresses.
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, proxies: tuple[Network, ...]) -> bool:
    return any(address in network for network in proxies)


def forwarded_client(peer: str | None, forwarded_for: str, proxies: tuple[Network, ...]) -> str:
    """The client's address given the peer's, the ``X-Forwarded-For`` value and the proxies.

    ``forwarded_for`` is the header's values joined by commas (empty when
    absent). The peer's own address is the answer when it is not a trusted
    proxy, when the header is absent or holds anything but plain addresses,
    and the leftmost entry when every entry is a trusted proxy.
    """
    own = peer or UNKNOWN
    peer_address = _address(own)
    if peer_address is None or not _trusted(peer_address, proxies):
        return own
    entries = [_address(entry) for entry in forwarded_for.split(",")] if forwarded_for else []
    valid = [entry for entry in entries if entry is not None]
    if not valid or len(valid) < len(entries):
        return own
    for entry in reversed(valid):
        if not _trusted(entry, proxies):
            return str(entry)
    return str(valid[0])


def client_address(request: web.Request, proxies: tuple[Network, ...]) -> str:
    """The address of the client that sent ``request``, computed once per request.

    ``proxies`` are the trusted reverse proxies (``Settings.proxies``); see the
    module's docstring for the rule.
    """
    if not proxies:
        # No proxy is trusted, so no header is read: the peer is the client.
        return request.remote or UNKNOWN
    known = request.get(_CLIENT_ADDRESS)
    if known is None:
        forwarded = ",".join(request.headers.getall("X-Forwarded-For", ()))
        known = request[_CLIENT_ADDRESS] = forwarded_client(request.remote, forwarded, proxies)
    return known
