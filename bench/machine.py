"""What the run was measured on: CPU, cores, memory, load, versions, relay's commit and branch."""

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


def _memory_gib() -> float | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


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
        "memory_gib": _memory_gib(),
        "load_average": [round(load, 2) for load in os.getloadavg()],
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _output(["node", "--version"]),
        "redis": _output(["redis-server", "--version"]),
        "wrk": _output(["wrk", "--version"]),
        "relay_commit": relay_commit(),
        "relay_branch": _output(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=REPO_DIR),
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


def header_line(m: dict[str, object]) -> str:
    """The machine and relay's commit in one line, for a markdown record."""
    dirty = " (modified)" if m.get("relay_tree_dirty") else ""
    load = m.get("load_average")
    before = f", load {load[0]}" if isinstance(load, list) and load else ""
    return (
        f"{m['cpu_model']}, {m['cores']} cores, {m.get('memory_gib')} GiB{before}; "
        f"Linux {m['kernel']}; Python {m['python']}, Node {m['node']}, {m['redis']}; "
        f"relay {m['relay_commit']} on {m.get('relay_branch')}{dirty}"
    )
