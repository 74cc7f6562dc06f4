"""The examples run as documented."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RedisServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


def entries(server: RedisServer, stream: str) -> list[dict[str, str]]:
    with server.client() as client:
        return [fields for _, fields in client.xrange(stream)]


@pytest.mark.process
def test_plain_worker_reports_every_step_then_completed(
    redis_url: str, redis_server: RedisServer
) -> None:
    done = run_example(
        str(EXAMPLES / "worker.py"), "--redis-url", redis_url, "--session", "w1", "--pause", "0"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "w1"
    reported = entries(redis_server, "workflow:progress:map")
    assert len(reported) == 21
    assert reported[0]["step"] == "analyzing"
    assert reported[-1]["status"] == "completed"
    assert reported[-1]["progress"] == "100"


@pytest.fixture
def fake_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's decorators as plain functions: enough to run the flow's wiring."""

    def passthrough(function: Callable[..., Any]) -> Callable[..., Any]:
        return function

    module = types.ModuleType("prefect")
    module.flow = passthrough  # type: ignore[attr-defined]
    module.task = passthrough  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "prefect", module)


@pytest.mark.usefixtures("fake_prefect")
def test_prefect_flow_wiring(
    redis_url: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_REDIS_URL", redis_url)
    spec = importlib.util.spec_from_file_location("prefect_flow", EXAMPLES / "prefect_flow.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.create_character("tames storms", session_id="c1")
    assert result["session_id"] == "c1"
    steps = [(e["step"], e["status"]) for e in entries(redis_server, "workflow:progress:character")]
    assert steps == [
        ("describing", "running"),
        ("drawing", "running"),
        ("writing backstory", "running"),
        ("writing backstory", "completed"),
    ]
