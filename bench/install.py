"""The bench's setup: install what the selected systems and load generators need, if missing.

wrk from Debian's packages, python-socketio from PyPI (never a project dependency),
and the npm packages into bench-local node_modules folders.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from config import LOADGEN_DIR, NODE_PEER_DIR

INSTALL_TIMEOUT = 600


def _run(argv: list[str], cwd: Path | None = None) -> None:
    print(f"setup: {' '.join(argv)}", file=sys.stderr)
    subprocess.run(argv, cwd=cwd, check=True, timeout=INSTALL_TIMEOUT)


def _ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    _run(["apt-get", "update", "-qq"])
    _run(["apt-get", "install", "-y", "-qq", "wrk"])


def _ensure_python_socketio() -> None:
    if importlib.util.find_spec("socketio") is None:
        _run([sys.executable, "-m", "pip", "install", "-q", "python-socketio"])


def _ensure_npm(folder: Path) -> None:
    if (folder / "node_modules").is_dir():
        return
    command = "ci" if (folder / "package-lock.json").exists() else "install"
    _run(["npm", command, "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder)


def ensure(systems: Iterable[str], workloads: Iterable[str]) -> None:
    """Install whatever the chosen systems and workloads need and is not there yet."""
    for tool in ("redis-server", "node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not on PATH")
    chosen = set(systems)
    if "W1" in set(workloads):
        _ensure_wrk()
    if "pysio" in chosen:
        _ensure_python_socketio()
    if "node" in chosen:
        _ensure_npm(NODE_PEER_DIR)
    _ensure_npm(LOADGEN_DIR)
