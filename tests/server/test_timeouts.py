"""Clients that send their request too slowly are cut off, against a real ``relay serve``."""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable

import orjson
import pytest

from tests.helpers import Gateway

# Far beyond the one-second timeouts the gateways below get: a drip that is
# still going then was never cut off.
GIVE_UP_AFTER = 20.0
DRIP_EVERY = 0.2


@pytest.fixture
def gateway(start_gateway: Callable[..., Gateway], redis_url: str) -> Gateway:
    return start_gateway(redis_url, RELAY_HEADER_TIMEOUT="1", RELAY_BODY_TIMEOUT="1")


def drip(port: int, head: bytes, drops: bytes) -> bytes:
    """Send ``head``, then one byte of ``drops`` at a time until the gateway answers or hangs up.

    Returns everything the gateway sent before it closed the connection.
    """
    answer = b""
    deadline = time.monotonic() + GIVE_UP_AFTER
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        sock.settimeout(DRIP_EVERY)
        sent = 0
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                try:
                    sock.send(drops[sent % len(drops) : sent % len(drops) + 1])
                except OSError:
                    return answer  # closed while we were sending
                sent += 1
                continue
            except ConnectionResetError:
                return answer
            if not chunk:
                return answer
            answer += chunk
    raise AssertionError(f"still connected after {GIVE_UP_AFTER}s; received {answer!r}")


def counted(gateway: Gateway, reason: str) -> str:
    with urllib.request.urlopen(f"{gateway.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return next(
        (line for line in text.splitlines() if f'reason="{reason}"' in line and "_total" in line),
        "",
    )


def test_headers_sent_too_slowly_are_cut_off(gateway: Gateway) -> None:
    answer = drip(gateway.port, b"POST /api/workflows/progress HTTP/1.1\r\n", b"X-Slow: y\r\n")
    assert answer == b""  # closed without an answer: there was no request to answer yet
    assert_still_serving(gateway)


def test_a_body_sent_too_slowly_is_408_then_closed(gateway: Gateway) -> None:
    head = (
        b"POST /api/workflows/progress HTTP/1.1\r\nHost: relay\r\n"
        b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    )
    answer = drip(gateway.port, head, b" ")
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 408 Request Timeout", answer
    body = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"] == "request_timeout"
    assert body["detail"] == []
    assert "1 seconds" in body["message"]
    assert counted(gateway, "request_timeout").endswith(" 1.0")
    assert_still_serving(gateway)


def assert_still_serving(gateway: Gateway) -> None:
    event = {"session_id": "s1", "workflow_type": "map", "step": "a", "progress": 1}
    request = urllib.request.Request(
        f"{gateway.url}/api/workflows/progress",
        data=orjson.dumps(event),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 202
