"""``relay serve --workers 2``: two real gateway processes behind one port, on one Redis."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RedisServer
from tests.helpers import (
    Gateway,
    env_without_relay,
    event,
    receive_events,
    subscribe,
    until,
    wait_until,
)

WORKERS = 2
# Sockets opened to find both workers: all on one worker by chance is 2 ** -15.
SPREAD_SOCKETS = 16
STARTED = re.compile(
    r"worker (\d+) \S+: relay gateway on \S+ \(Redis, worker \d+ of \d+, pid (\d+)"
)
METRICS = re.compile(r"worker (\d+) \S+: metrics on (http://\S+/metrics)")


def worker_pids(gateway: Gateway) -> dict[int, int]:
    """Worker number -> pid, as each worker logged it once it was serving."""
    found: dict[int, int] = {}

    def all_started() -> bool:
        found.update((int(n), int(pid)) for n, pid in STARTED.findall(gateway.logs()))
        return len(found) == WORKERS

    wait_until(all_started, what="every worker serving")
    return found


def metrics_urls(gateway: Gateway) -> dict[int, str]:
    """Worker number -> the address of its own /metrics."""
    found: dict[int, str] = {}

    def all_listed() -> bool:
        found.update((int(n), url) for n, url in METRICS.findall(gateway.logs()))
        return len(found) == WORKERS

    wait_until(all_listed, what="every worker's metrics port")
    return found


async def metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    """The sum of the samples of ``name`` on one worker's /metrics."""
    async with http.get(url) as response:
        text = await response.text()
    pattern = re.compile(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", re.MULTILINE)
    return sum(float(value) for value in pattern.findall(text))


async def per_worker(http: aiohttp.ClientSession, urls: dict[int, str], name: str) -> list[float]:
    return [await metric(http, urls[n], name) for n in sorted(urls)]


@pytest.fixture
def workers(start_gateway: Callable[..., Gateway], redis_url: str) -> Gateway:
    """``relay serve --workers 2`` on the private Redis, each worker with its metrics port."""
    return start_gateway(redis_url, flags=["--workers", str(WORKERS), "--metrics-port", "0"])


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; an exited one nobody has reaped yet (a zombie) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def test_both_workers_answer_and_share_events_through_redis(
    workers: Gateway, http: aiohttp.ClientSession
) -> None:
    pids = worker_pids(workers)
    assert workers.process is not None
    assert len(set(pids.values()) | {workers.process.pid}) == WORKERS + 1
    urls = metrics_urls(workers)
    assert [await metric(http, urls[n], "relay_reader_ready") for n in sorted(urls)] == [1, 1]

    # Which worker took each socket: the one whose subscriber count went up.
    on_worker: dict[int, aiohttp.ClientWebSocketResponse] = {}
    sockets = []
    try:
        for opened in range(1, SPREAD_SOCKETS + 1):
            before = await per_worker(http, urls, "relay_subscribers")
            ws = await http.ws_connect(workers.ws_url)
            sockets.append(ws)
            await subscribe(ws, workflow_type="map")

            async def counted(opened: int = opened) -> bool:
                return sum(await per_worker(http, urls, "relay_subscribers")) == opened

            await until(counted, what=f"{opened} subscribers counted")
            after = await per_worker(http, urls, "relay_subscribers")
            (number,) = [n for n, (b, a) in enumerate(zip(before, after, strict=True), 1) if a > b]
            on_worker.setdefault(number, ws)
        assert sorted(on_worker) == [1, 2], "the kernel gave every connection to one worker"

        published_before = await per_worker(http, urls, "relay_events_published_total")
        async with http.post(f"{workers.url}/api/workflows/progress", json=event()) as resp:
            assert resp.status == 202, workers.logs()
            entry_id = (await resp.json())["id"]
        published = await per_worker(http, urls, "relay_events_published_total")
        (publisher,) = [
            n for n, (b, a) in enumerate(zip(published_before, published, strict=True), 1) if a > b
        ]
        other = on_worker[3 - publisher]
        assert [frame["id"] for frame in await receive_events(other, 1)] == [entry_id]
        for ws in sockets:
            if ws is not other:
                assert [frame["id"] for frame in await receive_events(ws, 1)] == [entry_id]
    finally:
        for ws in sockets:
            await ws.close()


async def test_sigterm_stops_every_worker(workers: Gateway, http: aiohttp.ClientSession) -> None:
    pids = worker_pids(workers)
    assert workers.process is not None
    async with http.ws_connect(workers.ws_url) as ws:
        await subscribe(ws, workflow_type="map")
        workers.process.send_signal(signal.SIGTERM)
        message = await ws.receive(timeout=10)
        assert message.type is aiohttp.WSMsgType.CLOSE
        assert message.data == 1001
    code = await asyncio.to_thread(workers.process.wait, 15)
    assert code == 0, workers.logs()
    assert not [pid for pid in pids.values() if alive(pid)]
    for number, pid in pids.items():
        assert f"worker {number} (pid {pid}) stopped" in workers.logs()


async def test_a_killed_worker_stops_the_others_and_the_parent_fails(workers: Gateway) -> None:
    pids = worker_pids(workers)
    assert workers.process is not None
    os.kill(pids[2], signal.SIGKILL)
    code = await asyncio.to_thread(workers.process.wait, 15)
    assert code == 1, workers.logs()
    assert f"worker 2 (pid {pids[2]}) was killed by SIGKILL" in workers.logs()
    assert f"worker 1 (pid {pids[1]}) stopped" in workers.logs()
    assert not alive(pids[1])


async def test_workers_stop_when_the_parent_is_killed(workers: Gateway) -> None:
    pids = worker_pids(workers)
    workers.stop(kill=True)
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), what="orphaned workers gone")
    assert workers.logs().count("the parent process is gone; stopping") == WORKERS


async def test_each_worker_tells_its_own_readiness(
    start_gateway: Callable[..., Gateway], own_redis: RedisServer, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(own_redis.url, flags=["--workers", str(WORKERS), "--metrics-port", "0"])
    urls = metrics_urls(gateway)

    async def readiness_is(value: float) -> bool:
        return await per_worker(http, urls, "relay_reader_ready") == [value] * WORKERS

    own_redis.stop(kill=True)
    await until(lambda: readiness_is(0), timeout=20, what="both workers not ready")
    # A fresh connection each time, to whichever worker the kernel picks.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
        for _ in range(SPREAD_SOCKETS):
            async with fresh.get(f"{gateway.url}/readyz") as response:
                assert response.status == 503
    own_redis.start()
    await until(lambda: readiness_is(1), timeout=30, what="both workers ready again")


def test_a_port_held_by_another_program_is_refused_before_any_worker(redis_url: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "relay", "serve", "--port", str(port), "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env_without_relay(), "RELAY_REDIS_URL": redis_url},
            check=False,
        )
    assert done.returncode == 1
    assert f"relay serve: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "worker" not in done.stderr


def test_more_than_one_worker_without_redis_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env_without_relay(),
        check=False,
    )
    assert done.returncode == 2
    assert "--workers / RELAY_WORKERS" in done.stderr
    assert "embedded in-process store cannot be shared" in done.stderr
