"""The compose deployment on a Docker engine: bring-up time, subscribers through nginx, failover.

Run as root on a machine with docker.io, docker-compose and debootstrap::

    python bench/compose.py [--subscribers N] [--nginx-conf FILE] [--base-image TAG]

It starts a Docker engine if none answers, builds the Debian base image the
deployment tests use (or takes ``--base-image``), brings the stack up from
the project's own files with ``relay init``'s ``.env``, and prints:

- bring-up: seconds from ``docker-compose up -d --build`` to every gateway
  healthy behind nginx;
- capacity: of N WebSockets opened through nginx (with a token), how many
  subscribed, and how many of those received one event published afterwards;
- failover: four clients loop ``GET /readyz`` through nginx while one gateway
  replica is killed; the longest answer, the errors, and the answers over 1 s.

``--nginx-conf`` mounts another nginx configuration (an older one, say), for
figures before and after a change. Everything started is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relay.server.auth import mint_token  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.docker_stack import ComposeStack, DockerEngine, build_base_image  # noqa: E402

CONNECT_CONCURRENCY = 200
FAILOVER_CLIENTS = 4
FAILOVER_SECONDS = 20.0


def nginx_url(stack: ComposeStack) -> str:
    """nginx at its container address, on the bridge network.

    The host port goes through docker-proxy, which holds two descriptors per
    connection under the engine's own limit: it, not nginx, would be measured.
    """
    (nginx,) = stack.containers("nginx")
    return f"http://{stack.addresses(nginx)[0]}:80"


async def capacity(base: str, token: str, key: str, count: int) -> tuple[int, int]:
    """Subscribers that got through nginx, and how many of them received one event."""
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        refusals: Counter[str] = Counter()

        async def subscribe() -> None:
            async with gate:
                try:
                    ws = await http.ws_connect(f"{base}/ws", params={"token": token})
                except (aiohttp.ClientError, OSError, TimeoutError) as error:
                    refusals[type(error).__name__] += 1
                    return
                await ws.send_json({"action": "subscribe", "workflow_type": "capacity"})
                while True:
                    message = await ws.receive(timeout=30)
                    if message.type is not aiohttp.WSMsgType.TEXT:
                        refusals[f"closed {ws.close_code}"] += 1
                        return
                    frames = json.loads(message.data)
                    for frame in frames if isinstance(frames, list) else [frames]:
                        if frame.get("type") == "subscribed":
                            sockets.append(ws)
                            return

        await asyncio.gather(*(subscribe() for _ in range(count)))
        if refusals:
            print(f"  not subscribed: {dict(refusals)}")
        event = {"session_id": "c1", "workflow_type": "capacity", "step": "one", "progress": 1}
        async with http.post(
            f"{base}/api/workflows/progress",
            json=event,
            headers={"Authorization": f"Bearer {key}"},
        ) as response:
            assert response.status == 202, await response.text()

        async def delivered(ws: aiohttp.ClientWebSocketResponse) -> bool:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                while True:
                    message = await ws.receive_json(timeout=60)
                    frames = message if isinstance(message, list) else [message]
                    if any("event" in frame for frame in frames):
                        return True
            return False

        received = sum(await asyncio.gather(*(delivered(ws) for ws in sockets)))
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        return len(sockets), received


async def failover(stack: ComposeStack) -> tuple[float, int, int, int]:
    """Longest answer, errors, slow answers and all answers while a replica is killed."""
    latencies: list[float] = []
    errors = 0
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:

        async def loop() -> None:
            nonlocal errors
            while not stop.is_set():
                started = time.monotonic()
                try:
                    async with http.get(f"{stack.url}/readyz") as response:
                        await response.read()
                        errors += response.status != 200
                except (aiohttp.ClientError, OSError, TimeoutError):
                    errors += 1
                latencies.append(time.monotonic() - started)

        clients = [asyncio.create_task(loop()) for _ in range(FAILOVER_CLIENTS)]
        await asyncio.sleep(2)
        victim = stack.containers("gateway")[0]
        await asyncio.to_thread(stack.engine.docker, "kill", victim)
        await asyncio.sleep(FAILOVER_SECONDS)
        stop.set()
        await asyncio.gather(*clients)
    slow = sum(1 for latency in latencies if latency > 1)
    return max(latencies), errors, slow, len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=12_000)
    parser.add_argument("--nginx-conf", type=Path, help="nginx.conf to mount instead of ours")
    parser.add_argument("--base-image", help="an image with python3, redis-server and nginx")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    engine = DockerEngine.start(workdir)
    base = args.base_image or "relay-bench-base:latest"
    stack = ComposeStack(engine, workdir / "stack", base)
    try:
        if not args.base_image:
            started = time.monotonic()
            build_base_image(engine, workdir, base)
            print(f"base image built in {time.monotonic() - started:.0f} s")
        stack.directory.mkdir()
        written = stack.prepare(free_port(), {"RELAY_NOFILE_LIMIT": str(min(hard, 70_000))})
        if args.nginx_conf:
            shutil.copy(args.nginx_conf, stack.directory / "deploy" / "nginx.conf")
        started = time.monotonic()
        stack.up("--build")
        print(f"bring-up (build, start, all healthy): {time.monotonic() - started:.0f} s")
        token = mint_token(written["RELAY_TOKEN_SECRET"], "bench", workflow_types=["*"])
        subscribed, received = asyncio.run(
            capacity(nginx_url(stack), token, written["RELAY_API_KEYS"], args.subscribers)
        )
        print(f"capacity: {subscribed} of {args.subscribers} subscribed, {received} got the event")
        longest, errors, slow, total = asyncio.run(failover(stack))
        print(
            f"failover: longest answer {longest:.2f} s, {errors} errors, "
            f"{slow} answers over 1 s, of {total}"
        )
    finally:
        stack.down()
        if not args.base_image:
            engine.docker("rmi", "-f", base, check=False)
        engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


if __name__ == "__main__":
    main()
