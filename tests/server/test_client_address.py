"""The client's address behind trusted proxies: the rule, and the publish rate limit keyed on it."""

from __future__ import annotations

import aiohttp
import pytest
from pydantic import ValidationError

from relay.server.client_address import forwarded_client, parse_networks
from relay.server.settings import Settings
from tests.helpers import event, serving

PROXIES = parse_networks("10.0.0.1, 192.168.0.0/16, 2001:db8::/32")


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        # an untrusted peer's header is never believed
        ("203.0.113.9", "198.51.100.1", "203.0.113.9"),
        ("10.0.0.2", "198.51.100.1", "10.0.0.2"),
        # a trusted peer names the client
        ("10.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("192.168.4.7", " 198.51.100.1 ", "198.51.100.1"),
        # a chain: the rightmost untrusted entry, not what the client wrote on the left
        ("10.0.0.1", "6.6.6.6, 198.51.100.1, 192.168.1.1", "198.51.100.1"),
        ("10.0.0.1", "6.6.6.6,198.51.100.1", "198.51.100.1"),
        # every entry a proxy: the furthest one
        ("10.0.0.1", "192.168.1.2, 192.168.1.1", "192.168.1.2"),
        # no header, or an empty one
        ("10.0.0.1", "", "10.0.0.1"),
        ("10.0.0.1", " , ", "10.0.0.1"),
        # garbage anywhere in the header: the peer
        ("10.0.0.1", "unknown", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.1:4711", "10.0.0.1"),
        ("10.0.0.1", "198.51.100.1, <script>", "10.0.0.1"),
        ("10.0.0.1", "999.1.1.1", "10.0.0.1"),
        # IPv6 peers and entries, and IPv4-mapped peers of a dual-stack listener
        ("2001:db8::5", "2600::2, 2001:DB8:1::1", "2600::2"),
        ("2001:db8::5", "2001:0db8::7, 2600::1", "2600::1"),
        ("::ffff:10.0.0.1", "198.51.100.1", "198.51.100.1"),
        ("::1", "198.51.100.1", "::1"),
        # a peer without an address (a Unix socket)
        (None, "198.51.100.1", "?"),
        ("", "198.51.100.1", "?"),
    ],
)
def test_the_rightmost_untrusted_address_is_the_client(
    peer: str | None, forwarded: str, client: str
) -> None:
    assert forwarded_client(peer, forwarded, PROXIES) == client


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert forwarded_client("127.0.0.1", "198.51.100.1", ()) == "127.0.0.1"


def test_every_entry_is_normalised() -> None:
    assert forwarded_client("10.0.0.1", "2001:0DB8:0::0:9", parse_networks("10.0.0.1")) == (
        "2001:db8::9"
    )


@pytest.mark.parametrize("setting", ["nginx", "10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/8;::1"])
def test_a_malformed_proxy_setting_is_refused(setting: str) -> None:
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(trusted_proxies=setting)


def test_the_setting_reads_addresses_and_networks() -> None:
    settings = Settings(trusted_proxies=" 10.0.0.0/8 ,, ::1")
    assert [str(network) for network in settings.proxies] == ["10.0.0.0/8", "::1/128"]
    assert Settings().proxies == ()


async def _statuses(http: aiohttp.ClientSession, base: str, clients: list[str]) -> list[int]:
    statuses = []
    for client in clients:
        headers = {"X-Forwarded-For": client}
        async with http.post(
            f"{base}/api/workflows/progress", json=event(), headers=headers
        ) as response:
            statuses.append(response.status)
    return statuses


def _one_event_each(redis_url: str, trusted_proxies: str) -> Settings:
    # One event per publisher, refilled far slower than the test runs.
    return Settings(
        redis_url=redis_url,
        publish_rate=0.001,
        publish_burst=1,
        trusted_proxies=trusted_proxies,
    )


async def test_clients_behind_a_trusted_proxy_get_buckets_of_their_own(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(_one_event_each(redis_url, "127.0.0.0/8")) as base:
        statuses = await _statuses(http, base, ["198.51.100.1", "198.51.100.2", "198.51.100.1"])
    assert statuses == [202, 202, 429]


async def test_an_untrusted_peer_cannot_buy_buckets_with_the_header(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(_one_event_each(redis_url, "10.0.0.0/8")) as base:
        statuses = await _statuses(http, base, ["198.51.100.1", "198.51.100.2"])
    assert statuses == [202, 429]
