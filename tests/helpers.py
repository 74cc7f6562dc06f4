"""Test helpers: waiting on conditions, gateway processes, WebSocket conversations."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp.test_utils import TestServer
from redis.typing import EncodableT, FieldT

from relay.client.redis_urls import (
    AsyncStore,
    Kind,
    SyncStore,
    async_redis_store,
    check_mode,
    redis_store,
)
from relay.server.app import create_app
from relay.server.settings import Settings

DEFAULT_TIMEOUT = 10.0

# redis-py gives XADD and XRANGE one signature for every client, bytes or text:
# a field map as XADD takes it, and what XRANGE answers on a text client.
Fields = dict[FieldT, EncodableT]
Entries = list[tuple[str, dict[str, str]]]


def wait_until(
    condition: Callable[[], bool], *, timeout: float = DEFAULT_TIMEOUT, what: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def eventually(
    condition: Callable[[], Any], *, timeout: float = DEFAULT_TIMEOUT, what: str = "condition"
) -> None:
    """Async twin of :func:`wait_until` for conditions checked inside the event loop."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def until(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "condition",
) -> None:
    """Await ``check()`` until it answers True; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def session_state(http: aiohttp.ClientSession, base: str, session_id: str) -> Any:
    """The gateway's answer for one session: its state, or None while it is unknown."""
    async with http.get(f"{base}/api/workflows/sessions/{session_id}") as response:
        return await response.json() if response.status == 200 else None


async def state_when(
    http: aiohttp.ClientSession, base: str, session_id: str, **expected: Any
) -> Any:
    """The session's state once every ``expected`` field has the given value."""
    found: dict[str, Any] = {}

    async def check() -> bool:
        state = await session_state(http, base, session_id)
        found.clear()
        found.update(state or {})
        return state is not None and all(state.get(k) == v for k, v in expected.items())

    await until(check, what=f"session {session_id} with {expected}")
    return found


async def events_read(http: aiohttp.ClientSession, base: str, workflow_type: str = "map") -> float:
    """How many events of ``workflow_type`` the gateway's reader has read so far."""
    line = f'relay_events_read_total{{workflow_type="{workflow_type}"}} '
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0][len(line) :]) if found else 0.0


async def read_back(
    http: aiohttp.ClientSession, base: str, count: float, workflow_type: str = "map"
) -> None:
    """Wait until the gateway's reader has read ``count`` events of ``workflow_type``.

    The session view answers for a publish at once, so it cannot tell whether
    the reader (which routes to subscribers) got as far; its counter can.
    """

    async def check() -> bool:
        return await events_read(http, base, workflow_type) >= count

    await until(check, what=f"the reader to read {count} {workflow_type} events")


def answers_ok(url: str, timeout: float = 1) -> bool:
    """True when ``url`` answers 200; a refusal, error status or timeout is False."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class OnLoopback:
    """Something clients reach on a port of this machine: its HTTP and WebSocket addresses."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


class Gateway(OnLoopback):
    """A ``relay serve`` process."""

    def __init__(self, args: list[str], port: int, log: Path, env: dict[str, str]) -> None:
        self.args = args
        self.port = port
        self.log = log
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, *, ready: bool = True) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        probe = "/readyz" if ready else "/healthz"
        wait_until(lambda: self._answers(probe), timeout=20, what=f"gateway {self.url}{probe}")

    def _answers(self, path: str) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"gateway exited early:\n{self.log.read_text()}")
        return answers_ok(self.url + path)

    def stop(self, *, kill: bool = False) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        code = self.process.wait(timeout=15)
        self.process = None
        return code

    def logs(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def event(session_id: str = "s1", workflow_type: str = "map", **fields: Any) -> dict[str, Any]:
    """A valid event body, with any field overridden."""
    body: dict[str, Any] = {
        "session_id": session_id,
        "workflow_type": workflow_type,
        "step": "analyzing",
        "progress": 45,
        "metadata": {"details": "forests"},
    }
    body.update(fields)
    return body


# Items of array frames not yet handed out, per socket.
_UNREAD: weakref.WeakKeyDictionary[aiohttp.ClientWebSocketResponse, deque[Any]] = (
    weakref.WeakKeyDictionary()
)


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """The next message, decoded; a frame holding an array is handed out item by item."""
    unread = _UNREAD.setdefault(ws, deque())
    if unread:
        return unread.popleft()
    message = await asyncio.wait_for(ws.receive(), timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {message}"
    decoded = orjson.loads(message.data)
    if isinstance(decoded, list):
        unread.extend(decoded[1:])
        return decoded[0]
    return decoded


async def receive_events(
    ws: aiohttp.ClientWebSocketResponse, count: int, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any]]:
    """The next ``count`` event frames, unpacking arrays, failing on a timeout."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < count:
        item = await receive(ws, max(deadline - time.monotonic(), 0.01))
        if "event" in item:
            events.append(item)
    return events


async def subscribe(ws: aiohttp.ClientWebSocketResponse, **fields: Any) -> dict[str, Any]:
    """Send a subscribe action and return the gateway's confirmation."""
    await ws.send_str(orjson.dumps({"action": "subscribe", **fields}).decode())
    answer = await receive(ws)
    assert answer.get("type") == "subscribed", answer
    return dict(answer)


def env_without_relay() -> dict[str, str]:
    """The environment with every RELAY_ variable removed."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """A gateway application served in this process; yields its base URL."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class StalledClient:
    """A WebSocket client on a plain socket that can stop reading, like a frozen browser tab.

    aiohttp's client keeps reading into its own buffer, so it cannot play a
    client whose TCP window closes; a raw socket with a small receive buffer can.
    """

    def __init__(self, port: int, path: str) -> None:
        import base64
        import socket

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def read_frames(
        self, until: Callable[[list[Any]], bool], timeout: float = DEFAULT_TIMEOUT
    ) -> tuple[list[Any], int | None]:
        """Read until ``until(frames)`` holds, the server closes, or ``timeout`` passes.

        Returns the decoded text frames (arrays unpacked) and the close code, if any.
        """
        import struct

        deadline = time.monotonic() + timeout
        frames: list[Any] = []
        while not until(frames):
            while len(self.buffer) >= 2:
                opcode = self.buffer[0] & 0x0F
                length = self.buffer[1] & 0x7F
                offset = 2
                if length == 126:
                    if len(self.buffer) < 4:
                        break
                    length = struct.unpack(">H", self.buffer[2:4])[0]
                    offset = 4
                elif length == 127:
                    if len(self.buffer) < 10:
                        break
                    length = struct.unpack(">Q", self.buffer[2:10])[0]
                    offset = 10
                if len(self.buffer) < offset + length:
                    break
                payload = self.buffer[offset : offset + length]
                self.buffer = self.buffer[offset + length :]
                if opcode == 0x8:
                    code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                    return frames, code
                if opcode == 0x1:
                    decoded = orjson.loads(payload)
                    frames.extend(decoded if isinstance(decoded, list) else [decoded])
            if until(frames):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out reading; got {len(frames)} frames")
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(65536)
            if not chunk:
                return frames, None
            self.buffer += chunk
        return frames, None

    def close(self) -> None:
        self.sock.close()


async def start_watch(gateway: Gateway, *args: str) -> asyncio.subprocess.Process:
    """A `relay watch` process against ``gateway``, its output on a pipe."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env.update(COLUMNS="120", LINES="40", TERM="xterm")
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "watch",
        "--url",
        gateway.url,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )


async def first_watch_line(
    watcher: asyncio.subprocess.Process, post: Callable[[int], Awaitable[object]]
) -> bytes:
    """The first line ``watcher`` prints, calling ``post(n)`` until it prints one.

    Events published before its subscription is in place are not shown, so
    keep posting until one is: its subscription is then live.
    """
    assert watcher.stdout is not None
    for attempt in range(100):
        await post(attempt)
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(watcher.stdout.readline(), 0.2)
    raise AssertionError("relay watch printed nothing")


def _kind(url: str) -> Kind:
    """A cluster for a ``redis+cluster://`` URL, else a single Redis, without asking the server."""
    return check_mode(url) or "single"


def store_client(url: str) -> SyncStore:
    """A blocking text client for a test's own reads and writes, of a single Redis or a cluster."""
    return redis_store(url, _kind(url), decode_responses=True)


def async_store_client(url: str) -> AsyncStore:
    """The asyncio twin of :func:`store_client`."""
    return async_redis_store(url, _kind(url), decode_responses=True)
