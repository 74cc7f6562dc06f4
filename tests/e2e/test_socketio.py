"""An unchanged socket.io-client 4.x against real gateways: polling, then a WebSocket, or one."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.sync_api import Page

from relay.client.reporters import Reporter
from relay.server.auth import mint_token
from tests.helpers import DEFAULT_TIMEOUT, Gateway, OnLoopback, event, read_back

CLIENT_DIR = Path(__file__).resolve().parent.parent / "socketio"
CLIENT_FILES = ("package.json", "package-lock.json", "listen.js")
SECRET = "a-socketio-test-secret-of-enough-bytes"
BODY_FIELDS = ("session_id", "workflow_type", "step", "progress", "metadata")


@pytest.fixture(scope="session")
def client_script() -> Path:
    """listen.js beside socket.io-client installed by ``npm ci``, cached by the lock file."""
    lock = (CLIENT_DIR / "package-lock.json").read_bytes()
    folder = Path(tempfile.gettempdir()) / f"relay-socketio-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (folder / "node_modules" / "socket.io-client").is_dir():
        folder.mkdir(exist_ok=True)
        for name in CLIENT_FILES[:2]:
            shutil.copy(CLIENT_DIR / name, folder / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            check=True,
            timeout=300,
        )
    shutil.copy(CLIENT_DIR / "listen.js", folder / "listen.js")
    return folder / "listen.js"


class Listener:
    """A running listen.js: what it printed, line by line, and what it is told to emit."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[dict[str, Any]] = []

    async def next(self, kind: str, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next line of ``kind``; the lines of other kinds before it are kept in ``seen``."""
        assert self.process.stdout is not None
        while True:
            try:
                raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            except TimeoutError:
                raise AssertionError(f"no {kind} within {timeout}s; seen {self.seen}") from None
            assert raw, f"listen.js ended; it printed {self.seen}"
            line: dict[str, Any] = json.loads(raw)
            self.seen.append(line)
            if line["kind"] == kind:
                return line

    async def seen_or_next(self, kind: str) -> dict[str, Any]:
        """A line of ``kind`` already read past, else the next one."""
        for line in self.seen:
            if line["kind"] == kind:
                return line
        return await self.next(kind)

    async def events(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` progress events, skipping control events."""
        received: list[dict[str, Any]] = []
        while len(received) < count:
            line = await self.next("event")
            if line["name"].startswith("workflow:progress:"):
                received.append(line)
        return received

    async def subscribed(self) -> dict[str, Any]:
        """Wait for the next ``subscribed`` control event; its data."""
        while True:
            line = await self.next("event")
            if line["name"] == "subscribed":
                return dict(line["data"])

    def emit(self, name: str, payload: dict[str, Any]) -> None:
        """Have the client emit ``name`` with ``payload``."""
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps([name, payload]) + "\n").encode())


@asynccontextmanager
async def listening(script: Path, gateway: OnLoopback, *args: str) -> AsyncIterator[Listener]:
    """Run listen.js against ``gateway``; it is stopped, by its pid, at the end."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        gateway.url,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=script.parent,
    )
    try:
        yield Listener(process)
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), DEFAULT_TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()


async def publish_mixed(
    http: aiohttp.ClientSession, gateway: Gateway, redis_url: str, workflow_type: str = "map"
) -> list[dict[str, Any]]:
    """Publish four events, by HTTP and by a Reporter; their bodies in publishing order."""
    # Sessions of their own: one that completed cannot take events any more.
    one, two = (f"{workflow_type}-{uuid.uuid4().hex[:8]}" for _ in range(2))
    bodies = [
        event(one, workflow_type, step="fetch", progress=10),
        event(two, workflow_type, step="draw", progress=20, metadata={"tile": 3}),
        event(one, workflow_type, step="render", progress=30),
        event(one, workflow_type, step="done", progress=100, status="completed"),
    ]
    for body in bodies[:2]:
        async with http.post(f"{gateway.url}/api/workflows/progress", json=body) as resp:
            assert resp.status == 202, gateway.logs()
    report(redis_url, bodies[2:])
    return bodies


def report(redis_url: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Publish ``bodies`` straight into Redis, as workers do; the bodies."""
    with Reporter(redis_url) as reporter:
        for body in bodies:
            fields = {k: body[k] for k in BODY_FIELDS}
            reporter.report(**fields, status=body.get("status"))
    return bodies


def fresh_events(
    workflow_type: str, count: int, session: str | None = None
) -> list[dict[str, Any]]:
    """``count`` running events of ``session`` (by default a new one) of ``workflow_type``."""
    session = session or f"{workflow_type}-{uuid.uuid4().hex[:8]}"
    return [event(session, workflow_type, step=f"s{n}", progress=n) for n in range(count)]


def assert_delivered_per_type(received: list[dict[str, Any]], bodies: list[dict[str, Any]]) -> None:
    """Every body once, and each workflow type's in publishing order.

    A resumed connection catches up one type after another, so the order
    holds within a type (a stream), not across types.
    """
    assert len(received) == len(bodies)
    for wtype in {body["workflow_type"] for body in bodies}:
        assert_delivered(
            [line for line in received if line["name"] == f"workflow:progress:{wtype}"],
            [body for body in bodies if body["workflow_type"] == wtype],
        )


def assert_delivered(received: list[dict[str, Any]], bodies: list[dict[str, Any]]) -> None:
    """Every body once, in order, as the payload of its workflow:progress:{type} event."""
    assert [line["name"] for line in received] == [
        f"workflow:progress:{body['workflow_type']}" for body in bodies
    ]
    for line, body in zip(received, bodies, strict=True):
        data = line["data"]
        assert {k: data[k] for k in BODY_FIELDS} == {k: body[k] for k in BODY_FIELDS}
        assert data["status"] == body.get("status", "running")
        assert isinstance(data["ts"], int)


@pytest.mark.parametrize("transport", ["default", "websocket"])
async def test_every_event_arrives_once_in_order_with_its_body(
    transport: str,
    client_script: Path,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url)
    args = ("", "websocket") if transport == "websocket" else ()
    async with listening(client_script, gateway, *args) as listener:
        connected = await listener.next("connect")
        assert await listener.subscribed() == {
            "type": "subscribed",
            "workflow_type": "*",
            "session_id": None,
        }
        if transport == "default":
            # Default options: long-polling first, then the upgrade to a WebSocket.
            if connected["transport"] == "polling":
                await listener.seen_or_next("upgrade")
        else:
            assert connected["transport"] == "websocket"
        bodies = await publish_mixed(http, gateway, redis_url)
        bodies += await publish_mixed(http, gateway, redis_url, "plan")
        assert_delivered(await listener.events(len(bodies)), bodies)
        assert not any(line["kind"] == "disconnect" for line in listener.seen)


async def test_subscribe_narrows_to_one_type(
    client_script: Path,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url)
    async with listening(client_script, gateway) as listener:
        await listener.subscribed()
        listener.emit("subscribe", {"workflow_type": "plan"})
        assert (await listener.subscribed())["workflow_type"] == "plan"
        await publish_mixed(http, gateway, redis_url, "map")
        bodies = await publish_mixed(http, gateway, redis_url, "plan")
        assert_delivered(await listener.events(len(bodies)), bodies)


async def test_a_token_is_required_when_the_gateway_has_a_secret(
    client_script: Path,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    async with listening(client_script, gateway) as refused:
        error = await refused.next("connect_error")
        assert "token" in error["message"]
    async with listening(client_script, gateway, "not-a-token") as forged:
        assert "invalid token" in (await forged.next("connect_error"))["message"]

    token = mint_token(SECRET, "viewer", workflow_types=["map"])
    async with listening(client_script, gateway, token) as listener:
        await listener.next("connect")
        assert (await listener.subscribed())["workflow_type"] == "map"
        await publish_mixed(http, gateway, redis_url, "plan")
        bodies = await publish_mixed(http, gateway, redis_url, "map")
        received = await listener.events(len(bodies))
        assert_delivered(received, bodies)
        listener.emit("subscribe", {"workflow_type": "plan"})
        error = await listener.next("event")
        assert error["name"] == "error"
        assert error["data"]["code"] == "forbidden"


async def upgraded(listener: Listener) -> dict[str, Any]:
    """Wait for a new connection with default options, polling then the WebSocket.

    Its ``subscribed`` event's data.
    """
    connected = await listener.next("connect")
    assert connected["recovered"] is False
    subscribed = await listener.subscribed()
    if connected["transport"] == "polling":
        await listener.seen_or_next("upgrade")
    return subscribed


async def across_a_restart(
    listener: Listener,
    gateway: Gateway,
    redis_url: str,
    http: aiohttp.ClientSession,
    expected: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> None:
    """Events before, during and after a gateway restart on the same port all arrive once.

    ``expected`` picks, from what is published, what the client may receive.
    Before the restart only ``map`` events flow, so ``plan`` is resumed from
    the connection's time floor, ``map`` from its last event.
    """
    published = await publish_mixed(http, gateway, redis_url)
    first = await listener.events(len(expected(published)))
    assert all(line["offset"] for line in first)
    gateway.stop()
    assert (await listener.next("disconnect"))["reason"] == "transport close"
    published += report(redis_url, fresh_events("map", 3) + fresh_events("plan", 3))
    gateway.start()
    reconnected = await listener.next("connect", timeout=30)
    assert reconnected["recovered"] is True
    published += await publish_mixed(http, gateway, redis_url, "plan")
    published += await publish_mixed(http, gateway, redis_url)
    wanted = expected(published)
    rest = await listener.events(len(wanted) - len(first))
    assert_delivered_per_type(first + rest, wanted)
    # Nothing more: a duplicate would come before an event published last.
    last = report(redis_url, fresh_events("map", 1))
    assert_delivered(await listener.events(1), last)


async def test_a_default_client_recovers_every_event_across_a_gateway_restart(
    client_script: Path,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url)
    async with listening(client_script, gateway) as listener:
        assert (await upgraded(listener))["workflow_type"] == "*"
        await across_a_restart(listener, gateway, redis_url, http, lambda bodies: bodies)


async def test_a_client_with_a_token_recovers_what_its_token_allows(
    client_script: Path,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    token = mint_token(SECRET, "viewer", workflow_types=["map"])
    async with listening(client_script, gateway, token) as listener:
        assert (await upgraded(listener))["workflow_type"] == "map"

        def maps(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [body for body in bodies if body["workflow_type"] == "map"]

        await across_a_restart(listener, gateway, redis_url, http, maps)


async def test_a_client_with_a_session_token_recovers_its_sessions_of_every_type(
    client_script: Path,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
) -> None:
    gateway = start_gateway(redis_url, RELAY_TOKEN_SECRET=SECRET)
    mapped, planned = (f"watched-{uuid.uuid4().hex[:8]}" for _ in range(2))
    token = mint_token(SECRET, "viewer", sessions=[mapped, planned])
    async with listening(client_script, gateway, token) as listener:
        assert (await upgraded(listener))["session_id"] in (mapped, planned)
        wanted = report(redis_url, fresh_events("map", 2, mapped))
        report(redis_url, fresh_events("map", 2))
        first = await listener.events(len(wanted))
        gateway.stop()
        wanted += report(redis_url, fresh_events("map", 2, mapped))
        wanted += report(redis_url, fresh_events("plan", 2, planned))
        report(redis_url, fresh_events("plan", 2))
        gateway.start()
        assert (await listener.next("connect", timeout=30))["recovered"] is True
        wanted += report(redis_url, fresh_events("plan", 1, planned))
        rest = await listener.events(len(wanted) - len(first))
        assert_delivered_per_type(first + rest, wanted)
        last = report(redis_url, fresh_events("map", 1, mapped))
        assert_delivered(await listener.events(1), last)


async def connect_by_polling(
    http: aiohttp.ClientSession, gateway: Gateway, auth: dict[str, Any]
) -> dict[str, Any]:
    """Open a polling session and CONNECT with ``auth``; the data of the server's answer."""
    base = f"{gateway.url}/socket.io/?EIO=4&transport=polling"
    async with http.get(base) as resp:
        sid = json.loads((await resp.text())[1:])["sid"]
    async with http.post(f"{base}&sid={sid}", data="40" + json.dumps(auth)) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(f"{base}&sid={sid}") as resp:
        answer = (await resp.text()).split("\x1e")[0]
    assert answer.startswith("40"), answer
    data: dict[str, Any] = json.loads(answer[2:])
    return data


@pytest.mark.parametrize(
    "offset",
    [
        "not an offset",
        "1." + "a" * 5000,
        # A position whose entry is not in the stream: history does not reach back.
        "1.a.map:1-0",
        {"map": "1-0"},
    ],
)
async def test_an_offset_that_cannot_be_resumed_gets_a_new_pid_and_live_events(
    offset: object,
    start_gateway: Callable[..., Gateway],
    redis_url: str,
    http: aiohttp.ClientSession,
) -> None:
    gateway = start_gateway(redis_url)
    report(redis_url, fresh_events("map", 2))
    await read_back(http, gateway.url, 2)
    answer = await connect_by_polling(http, gateway, {"pid": "earlier", "offset": offset})
    assert answer["pid"] != "earlier"
    assert {"sid", "pid"} <= answer.keys()


def test_the_browser_bundle_receives_every_event_across_a_restart(
    page: Page, client_script: Path, start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    page.goto(gateway.url + "/healthz")
    bundle = client_script.parent / "node_modules" / "socket.io-client" / "dist"
    page.add_script_tag(path=str(bundle / "socket.io.min.js"))
    page.evaluate(
        """() => {
            window.seen = [];
            window.connects = [];
            const socket = io();
            socket.on("connect", () => connects.push(socket.recovered));
            socket.on("subscribed", () => { window.subscribed = true; });
            socket.onAny((name, data) => {
                if (name.startsWith("workflow:progress:")) seen.push(data);
            });
        }"""
    )
    page.wait_for_function("window.subscribed === true")
    published = report(redis_url, fresh_events("map", 3))
    page.wait_for_function("n => seen.length === n", arg=len(published))
    gateway.stop()
    published += report(redis_url, fresh_events("map", 2) + fresh_events("plan", 2))
    gateway.start()
    page.wait_for_function("connects.length === 2", timeout=30_000)
    published += report(redis_url, fresh_events("plan", 2))
    page.wait_for_function("n => seen.length >= n", arg=len(published))
    assert page.evaluate("connects") == [False, True]
    seen = page.evaluate("seen")
    assert [(e["session_id"], e["step"]) for e in seen] == [
        (body["session_id"], body["step"]) for body in published
    ]
