"""Edges of authorisation: token lifetimes, the cancel claim, and who a publisher is."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from relay.server.auth import AuthError, mint_token, read_token
from relay.server.settings import Settings
from tests.helpers import event, receive, serving

SECRET = "auth-edges-secret-with-enough-length"
HOUR = 3600


def signed(**claims: Any) -> str:
    return jwt.encode({"sub": "alice", "workflow_types": ["*"], **claims}, SECRET, "HS256")


def test_a_lifetime_limit_measures_from_iat_or_from_now() -> None:
    now = int(time.time())
    far = signed(exp=253402300799)  # the last second of the year 9999
    assert read_token(far, SECRET).expires_at == 253402300799  # no limit by default
    refused = {
        "no iat, far exp": far,
        "iat now, exp in two hours": signed(iat=now, exp=now + 2 * HOUR),
        "issued long ago, exp soon": signed(iat=now - 10 * HOUR, exp=now + 600),
    }
    for name, token in refused.items():
        with pytest.raises(AuthError, match="lifetime") as caught:
            read_token(token, SECRET, max_lifetime=HOUR)
        assert not caught.value.expired, name
    accepted = [
        signed(exp=now + HOUR - 60),
        signed(iat=now - 600, exp=now + HOUR - 600),
        mint_token(SECRET, "bob", workflow_types=["map"], ttl_seconds=HOUR),
    ]
    for token in accepted:
        assert read_token(token, SECRET, max_lifetime=HOUR).subject in {"alice", "bob"}


@pytest.fixture
async def limited(redis_url: str) -> AsyncIterator[str]:
    settings = Settings(redis_url=redis_url, token_secret=SECRET, max_token_lifetime=HOUR)
    async with serving(settings) as url:
        yield url


async def test_gateway_refuses_tokens_beyond_its_lifetime_limit(
    limited: str, http: aiohttp.ClientSession
) -> None:
    far = signed(exp=253402300799)
    async with http.get(f"{limited}/api/workflows/sessions?token={far}") as response:
        assert response.status == 401
        assert "lifetime" in (await response.json())["message"]
    async with http.ws_connect(f"{limited}/ws?token={far}") as ws:
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert ws.close_code == 4001
    async with http.ws_connect(f"{limited}/ws") as ws:
        await ws.send_json({"action": "auth", "token": far})
        message = await ws.receive(timeout=10)
        assert ws.close_code == 4001
    fine = mint_token(SECRET, "bob", workflow_types=["*"], ttl_seconds=HOUR)
    async with http.get(f"{limited}/api/workflows/sessions?token={fine}") as response:
        assert response.status == 200
    async with http.ws_connect(f"{limited}/ws?token={fine}") as ws:
        await ws.send_json({"action": "ping"})
        assert await receive(ws) == {"type": "pong"}


def test_the_cancel_claim_must_be_a_boolean() -> None:
    now = int(time.time())
    with pytest.raises(AuthError, match="cancel"):
        read_token(signed(exp=now + 60, cancel="yes"), SECRET)
    assert read_token(signed(exp=now + 60, cancel=True), SECRET).cancel
    assert not read_token(signed(exp=now + 60), SECRET).cancel


async def test_made_up_bearer_values_share_the_address_limit_on_an_open_gateway(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    settings = Settings(redis_url=redis_url, publish_rate=0.001, publish_burst=2)
    async with serving(settings) as base:
        url = f"{base}/api/workflows/progress"
        statuses = []
        for attempt in range(4):
            headers = {"Authorization": f"Bearer rotated-{attempt}"}
            async with http.post(url, json=event(), headers=headers) as response:
                statuses.append(response.status)
        assert statuses == [202, 202, 429, 429]
        async with http.post(url, json=event()) as response:
            assert response.status == 429  # the same address, with no bearer at all


async def test_a_configured_key_has_its_own_bucket_apart_from_its_address(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    settings = Settings(redis_url=redis_url, publish_rate=0.001, publish_burst=1, api_keys="a,b")
    async with serving(settings) as base:
        url = f"{base}/api/workflows/progress"
        for key in ("a", "b"):
            async with http.post(
                url, json=event(), headers={"Authorization": f"Bearer {key}"}
            ) as r:
                assert r.status == 202, key
        async with http.post(url, json=event(), headers={"Authorization": "Bearer a"}) as r:
            assert r.status == 429
