"""Several real ``relay serve`` processes on one Redis behave as one service."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from relay.client.reporters import Reporter
from tests.helpers import (
    Gateway,
    event,
    receive,
    receive_events,
    start_watch,
    store_client,
    subscribe,
)

# Every test here runs on a single Redis and on a Redis Cluster.
pytestmark = pytest.mark.stores


async def publish(http: aiohttp.ClientSession, gateway: Gateway, **fields: Any) -> str:
    async with http.post(f"{gateway.url}/api/workflows/progress", json=event(**fields)) as resp:
        assert resp.status == 202, gateway.logs()
        return str((await resp.json())["id"])


async def test_three_gateways_deliver_every_path_once_in_order(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateways = [start_gateway(redis_url) for _ in range(3)]
    sockets = [await http.ws_connect(g.ws_url) for g in gateways]
    wildcard = await http.ws_connect(gateways[2].ws_url)
    try:
        for ws in sockets:
            await subscribe(ws, workflow_type="map")
        await subscribe(wildcard, workflow_type="*")

        expected = [await publish(http, gateways[0], session_id="s1", progress=p) for p in (1, 2)]
        with Reporter(redis_url) as reporter:
            expected.append(reporter.report("s2", "map", "python", 3))
        with store_client(redis_url) as raw:
            expected.append(
                raw.xadd(
                    "workflow:progress:map", {"session_id": "s3", "step": "raw", "progress": "4"}
                )
            )
            expected += [
                await publish(http, gateways[1], session_id="s1", progress=p) for p in (5, 6)
            ]
            brand_new = raw.xadd(
                "workflow:progress:brand-new",
                {"session_id": "n1", "step": "first", "progress": "7"},
            )

        for ws in sockets:
            frames = await receive_events(ws, len(expected))
            assert [f["id"] for f in frames] == expected  # once each, in stream order
            assert [f["data"]["progress"] for f in frames] == [1, 2, 3, 4, 5, 6]
        every = await receive_events(wildcard, len(expected) + 1)
        assert [f["id"] for f in every if f["event"] == "workflow:progress:map"] == expected
        [new] = [f for f in every if f["event"] == "workflow:progress:brand-new"]
        assert new["id"] == brand_new
        assert new["data"]["workflow_type"] == "brand-new"
        # nothing extra arrives: the next frame on each socket is the next event
        marker = await publish(http, gateways[2], session_id="s9")
        for ws in sockets:
            assert [f["id"] for f in await receive_events(ws, 1)] == [marker]
    finally:
        for ws in [*sockets, wildcard]:
            await ws.close()


async def test_invalid_raw_entry_is_skipped_and_the_reader_carries_on(
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url)
    async with http.ws_connect(gateway.ws_url) as ws:
        await subscribe(ws, workflow_type="map")
        with store_client(redis_url) as raw:
            raw.xadd("workflow:progress:map", {"session_id": "s1", "progress": "half"})
        good = await publish(http, gateway)
        assert [f["id"] for f in await receive_events(ws, 1)] == [good]
    assert "skipping invalid stream entry" in gateway.logs()


async def test_sigterm_closes_websockets_with_going_away(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url)
    async with http.ws_connect(gateway.ws_url) as ws:
        await subscribe(ws, workflow_type="map")
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1001
    code = await asyncio.to_thread(gateway.process.wait, 15)
    assert code == 0, gateway.logs()


async def test_embedded_gateway_without_redis(
    start_gateway: Callable[..., Gateway], http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway()
    async with http.get(f"{gateway.url}/readyz") as response:
        assert (await response.json())["embedded"] is True
    assert "embedded in-process store" in gateway.logs()
    async with http.ws_connect(gateway.ws_url + "?workflow_type=map") as ws:
        assert (await receive(ws))["type"] == "subscribed"
        wanted = await publish(http, gateway)
        [frame] = await receive_events(ws, 1)
    assert frame["id"] == wanted
    assert frame["data"]["metadata"] == {"details": "forests"}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "relay", *args], capture_output=True, text=True, timeout=60, env=env
    )


async def test_cli_publish_over_http_and_redis_and_watch_json(
    start_gateway: Callable[..., Gateway], redis_url: str, tmp_path: pytest.TempPathFactory
) -> None:
    gateway = start_gateway(redis_url)
    watcher = await start_watch(gateway, "--type", "map", "--json")
    try:
        # publish until the watcher shows the first event: its subscription is then in place
        assert watcher.stdout is not None
        first_line = b""
        for attempt in range(50):
            sent = await asyncio.to_thread(
                run_cli,
                "publish",
                "--type",
                "map",
                "--session",
                "s1",
                "--step",
                "warmup",
                "--progress",
                str(attempt),
                "--url",
                gateway.url,
            )
            assert sent.returncode == 0, sent.stderr
            try:
                first_line = await asyncio.wait_for(watcher.stdout.readline(), 0.5)
                break
            except TimeoutError:
                continue
        assert first_line
        over_http = await asyncio.to_thread(
            run_cli,
            "publish",
            "--type",
            "map",
            "--session",
            "s1",
            "--step",
            "http",
            "--progress",
            "45",
            "--metadata",
            '{"details": "forests"}',
            "--url",
            gateway.url,
        )
        over_redis = await asyncio.to_thread(
            run_cli,
            "publish",
            "--type",
            "map",
            "--session",
            "s1",
            "--step",
            "redis",
            "--progress",
            "50",
            "--redis-url",
            redis_url,
        )
        assert over_http.returncode == 0
        assert over_redis.returncode == 0
        ids = [over_http.stdout.strip(), over_redis.stdout.strip()]
        seen: list[str] = []
        while len(seen) < 2:
            line = await asyncio.wait_for(watcher.stdout.readline(), 10)
            frame = json.loads(line)
            if frame["data"]["step"] != "warmup":
                seen.append(frame["id"])
        assert seen == ids
    finally:
        watcher.terminate()
        await watcher.wait()


@pytest.mark.process
def test_cli_publish_reports_invalid_input_and_unreachable_gateway() -> None:
    bad = run_cli("publish", "--type", "Map", "--session", "s1", "--step", "a", "--progress", "5")
    assert bad.returncode == 2
    assert "workflow_type" in bad.stderr
    metadata = run_cli(
        "publish",
        "--type",
        "map",
        "--session",
        "s1",
        "--step",
        "a",
        "--progress",
        "5",
        "--metadata",
        "{oops",
    )
    assert metadata.returncode == 2
    assert "--metadata is not JSON" in metadata.stderr
    down = run_cli(
        "publish",
        "--type",
        "map",
        "--session",
        "s1",
        "--step",
        "a",
        "--progress",
        "5",
        "--url",
        "http://127.0.0.1:9",
        "--retry-for",
        "0.2",
    )
    assert down.returncode == 1
    assert "unreachable" in down.stderr
