"""What the run was measured on: CPU, cores, tool and package versions, relay's commit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from config import LOADGEN_DIR, NODE_PEER_DIR, REPO_DIR


def _output(argv: list[str], cwd: Path | None = None) -> str | None:
    """The first line a command prints (wrk prints its version with a failing exit code)."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _pip_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _npm_version(folder: Path, name: str) -> str | None:
    manifest = folder / "node_modules" / name / "package.json"
    return json.loads(manifest.read_text())["version"] if manifest.exists() else None


def relay_commit(checkout: Path = REPO_DIR) -> str | None:
    """The short commit checked out in ``checkout`` (this repository by default)."""
    return _output(["git", "rev-parse", "--short", "HEAD"], cwd=checkout)


def describe() -> dict[str, object]:
    """The machine and software record stored with every result."""
    dirty = _output(["git", "status", "--porcelain", "--", "relay"], cwd=REPO_DIR)
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _output(["node", "--version"]),
        "redis": _output(["redis-server", "--version"]),
        "wrk": _output(["wrk", "--version"]),
        "relay_commit": relay_commit(),
        "relay_tree_dirty": bool(dirty),
        "python_packages": {
            name: _pip_version(name)
            for name in ("aiohttp", "redis", "uvloop", "orjson", "python-socketio")
        },
        "npm_packages": {
            "socket.io": _npm_version(NODE_PEER_DIR, "socket.io"),
            "@socket.io/redis-streams-adapter": _npm_version(
                NODE_PEER_DIR, "@socket.io/redis-streams-adapter"
            ),
            "redis": _npm_version(NODE_PEER_DIR, "redis"),
            "ws": _npm_version(LOADGEN_DIR, "ws"),
            "socket.io-client": _npm_version(LOADGEN_DIR, "socket.io-client"),
        },
    }
