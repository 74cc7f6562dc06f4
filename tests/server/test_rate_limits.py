"""Limits: connections per gateway, frame floods, publish rates; each answered and counted."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from relay.server.settings import Settings
from tests.helpers import event, receive, receive_events, serving, subscribe


def limited(redis_url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=redis_url, read_block_ms=100, **overrides)


async def test_connection_limit_answers_503_and_frees_up(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    async with serving(limited(redis_url, max_connections=2)) as base:
        first = await http.ws_connect(f"{base}/ws")
        second = await http.ws_connect(f"{base}/ws")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{base}/ws")
        assert refused.value.status == 503
        async with http.get(f"{base}/api/workflows/events") as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "1"
        await first.close()

        async def accepted() -> bool:
            try:
                third = await http.ws_connect(f"{base}/ws")
            except aiohttp.WSServerHandshakeError:
                return False
            await third.close()
            return True

        for _ in range(200):
            if await accepted():
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the freed place was never reused")
        await second.close()


async def test_a_flooding_client_is_limited_then_closed_while_others_carry_on(
    redis_url: str, http: aiohttp.ClientSession
) -> None:
    settings = limited(redis_url, ws_rate=20, ws_burst=10)
    async with (
        serving(settings) as base,
        http.ws_connect(f"{base}/ws") as calm,
        http.ws_connect(f"{base}/ws") as flood,
    ):
        await subscribe(calm, workflow_type="map")
        for _ in range(30):
            await flood.send_json({"action": "ping"})
        pongs = 0
        answer = await receive(flood)
        while answer == {"type": "pong"}:
            pongs += 1
            answer = await receive(flood)
        assert answer["code"] == "rate_limited"
        assert 10 <= pongs < 30  # the burst, plus whatever refilled while sending
        # the calm client's events still arrive while the flood goes on
        async with http.post(f"{base}/api/workflows/progress", json=event()) as response:
            wanted = (await response.json())["id"]
        assert [f["id"] for f in await receive_events(calm, 1)] == [wanted]
        for _ in range(150):
            await flood.send_str("flood")
        message = await flood.receive(timeout=10)
        while message.type is aiohttp.WSMsgType.TEXT:
            message = await flood.receive(timeout=10)
        assert flood.close_code == 1008
        await calm.send_json({"action": "ping"})
        assert await receive(calm) == {"type": "pong"}


async def test_publish_rate_per_key(redis_url: str, http: aiohttp.ClientSession) -> None:
    settings = limited(redis_url, publish_rate=1, publish_burst=3, api_keys="a,b")
    async with serving(settings) as base:
        url = f"{base}/api/workflows/progress"
        key_a = {"Authorization": "Bearer a"}
        for _ in range(3):
            async with http.post(url, json=event(), headers=key_a) as response:
                assert response.status == 202
        async with http.post(url, json=event(), headers=key_a) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["error"] == "rate_limited"
        batch = [event(), event()]
        async with http.post(f"{url}/batch", json=batch, headers=key_a) as response:
            assert response.status == 429
        async with http.post(url, json=event(), headers={"Authorization": "Bearer b"}) as r:
            assert r.status == 202  # another publisher is not affected
        async with http.get(f"{base}/metrics") as response:
            assert (
                'relay_requests_rejected_total{reason="rate_limited"} 2.0' in await response.text()
            )


async def test_settings_refuse_an_outbox_smaller_than_two_reads() -> None:
    with pytest.raises(ValueError, match="outbox_limit"):
        Settings(outbox_limit=100, read_count=100)
