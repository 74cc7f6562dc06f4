"""The ``relay`` command on a worker's light install: the base dependencies, no server extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

import relay

ROOT = Path(__file__).resolve().parents[2]

# What the server extra brings and a worker's install lacks.
SERVER_ONLY = ("aiohttp", "pydantic_settings", "rich", "jwt", "prometheus_client", "fakeredis")

# Runs the command with those modules unimportable, as if never installed, and
# says afterwards which of them got loaded anyway (none can: a None entry in
# sys.modules makes every import of the name fail).
SCRIPT = f"""
import sys
for name in {SERVER_ONLY!r}:
    sys.modules[name] = None
from relay.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
loaded = sorted(n for n in {SERVER_ONLY!r} if sys.modules.get(n) is not None)
print("loaded:", loaded, file=sys.stderr)
sys.exit(code)
"""

EXTRA_HINT = "pip install 'relay-progress[server]'"

# Every test runs a relay command in an interpreter of its own.
pytestmark = pytest.mark.process


def light_relay(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_version() -> None:
    result = light_relay("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"relay {relay.__version__}\n"


def test_publish_straight_to_redis(redis_url: str) -> None:
    result = light_relay(
        "publish",
        "--redis-url",
        redis_url,
        "--type",
        "map",
        "--session",
        "light-1",
        "--step",
        "meshing",
        "--progress",
        "40",
        "--metadata",
        '{"tiles": 3}',
    )
    assert result.returncode == 0, result.stderr
    assert "loaded: []" in result.stderr
    entry_id = result.stdout.strip()
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        ((stored_id, fields),) = client.xrange("workflow:progress:map")
    assert stored_id == entry_id
    assert fields["session_id"] == "light-1"
    assert json.loads(fields["metadata"]) == {"tiles": 3}


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["serve", "--port", "9000", "--redis-url", "redis://127.0.0.1:1/0"],
        ["watch", "--type", "map"],
        ["demo", "--duration", "1"],
        ["token", "--sub", "alice", "--type", "map", "--secret", "s3cret"],
        # A directory that is not there: nothing could be written even by mistake.
        ["init", "--dir", "/nonexistent/relay-init"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_server_commands_name_the_missing_extra(args: list[str]) -> None:
    result = light_relay(*args)
    assert result.returncode == 2
    message, loaded = result.stderr.splitlines()
    assert message.startswith(f"relay {args[0]}: needs the server extra")
    assert message.endswith(EXTRA_HINT)
    assert loaded == "loaded: []"
    assert result.stdout == ""


def test_unknown_flags_are_still_refused() -> None:
    result = light_relay(
        "publish", "--type", "map", "--session", "s1", "--step", "a", "--progress", "1", "--bogus"
    )
    assert result.returncode == 2
    assert "relay: error: unrecognized arguments: --bogus" in result.stderr
