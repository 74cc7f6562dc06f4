"""Log output: ``RELAY_LOG_FORMAT=json`` gives one JSON object per line, payloads never logged."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.cli.logs import JsonFormatter, configure_logging
from relay.cli.main import build_parser, settings_from_args
from tests.conftest import free_port
from tests.helpers import Gateway, env_without_relay, event, receive_events, subscribe

MARKER = "payload-marker-5f0c1d"


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    return [json.loads(line) for line in lines]


@pytest.mark.usefixtures("root_logger")
def test_formatter_writes_one_json_object_with_the_exception() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    log = logging.getLogger("relay.test")
    log.info("hello %s", "world")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("it broke")
    log.debug('quotes " and\nnewlines')
    hello, broke, tricky = json_lines(stream.getvalue())
    assert set(hello) == {"ts", "level", "logger", "message"}
    assert hello["level"] == "INFO"
    assert hello["logger"] == "relay.test"
    assert hello["message"] == "hello world"
    assert hello["ts"].endswith("+00:00")
    assert broke["level"] == "ERROR"
    assert broke["message"] == "it broke"
    assert "ZeroDivisionError" in broke["exception"]
    assert "Traceback" in broke["exception"]
    assert tricky["message"] == 'quotes " and\nnewlines'


def test_text_format_stays_the_default(root_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream)
    logging.getLogger("relay.test").info("plain")
    assert stream.getvalue().rstrip().endswith("INFO relay.test: plain")
    assert not any(isinstance(h.formatter, JsonFormatter) for h in root_logger.handlers)


def test_log_format_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_args(build_parser().parse_args(["serve"])).log_format == "text"
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")
    assert settings_from_args(build_parser().parse_args(["serve"])).log_format == "json"
    args = build_parser().parse_args(["serve", "--log-format", "text"])
    assert settings_from_args(args).log_format == "text"  # the flag wins
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--log-format", "xml"])


async def exercise(gateway: Gateway, http: aiohttp.ClientSession) -> None:
    """Traffic that makes the gateway log: a WebSocket client coming and going, a publish."""
    async with http.ws_connect(gateway.ws_url) as ws:
        await subscribe(ws, workflow_type="map")
        body = event(session_id="log-1", metadata={"details": MARKER})
        async with http.post(f"{gateway.url}/api/workflows/progress", json=body) as response:
            assert response.status == 202
        await receive_events(ws, 1)


async def test_serve_logs_json_lines_from_the_environment(
    start_gateway: Callable[..., Gateway], redis_url: str, http: aiohttp.ClientSession
) -> None:
    gateway = start_gateway(redis_url, RELAY_LOG_FORMAT="json", RELAY_LOG_LEVEL="debug")
    await exercise(gateway, http)
    assert await asyncio.to_thread(gateway.stop) == 0
    records = json_lines(gateway.logs())
    for record in records:
        assert {"ts", "level", "logger", "message"} <= set(record)
    messages = [r["message"] for r in records]
    assert any(m.startswith("relay gateway on http://") for m in messages)
    assert any(
        r["logger"] == "relay.server.websocket" and "connected" in r["message"] for r in records
    )
    assert {r["level"] for r in records} >= {"INFO", "WARNING"}
    assert MARKER not in gateway.logs()  # event payloads are never logged


@pytest.mark.process
async def test_serve_log_format_flag(
    redis_url: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    args = [sys.executable, "-m", "relay", "serve", "--port", str(port)]
    args += ["--redis-url", redis_url, "--log-format", "json"]
    gateway = Gateway(args, port, tmp_path / "gateway.log", env_without_relay())
    gateway.start()
    try:
        await exercise(gateway, http)
    finally:
        assert await asyncio.to_thread(gateway.stop) == 0
    records = json_lines(gateway.logs())
    assert any(r["logger"] == "relay.cli.main" for r in records)
    assert MARKER not in gateway.logs()
