"""The npm package of the browser client: its node tests, its types, and the gateway serving it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import relay
from relay.server.static_files import CLIENT
from tests.helpers import Gateway

PACKAGE = Path(__file__).resolve().parents[2] / "clients" / "js"


def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((PACKAGE / "package.json").read_text(encoding="utf-8"))
    return loaded


def tool(name: str) -> str:
    """The path of a command the package's checks need; skipped without it, except on CI."""
    found = shutil.which(name)
    if found is None:
        message = f"the JavaScript package's checks need {name} (apt nodejs npm)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_node_tests_pass() -> None:
    run([tool("node"), "--test", "test/"], PACKAGE)


@pytest.mark.slow
def test_the_declarations_type_check_an_app_s_use(tmp_path: Path) -> None:
    npm = tool("npm")
    # A copy, so the checkout gets no node_modules.
    copy = tmp_path / "package"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("node_modules"))
    run([npm, "ci", "--no-audit", "--no-fund"], copy)
    run([npm, "run", "typecheck"], copy)


def test_the_gateway_s_client_is_the_package_s_module() -> None:
    package = manifest()
    entry = package["exports"]["."]
    assert CLIENT.resolve() == (PACKAGE / entry["default"]).resolve()
    assert package["main"] == entry["default"]
    assert package["types"] == entry["types"]
    assert {Path(entry["default"]).name, Path(entry["types"]).name} <= set(package["files"])


def test_the_package_has_the_distribution_s_version_and_no_dependencies() -> None:
    package = manifest()
    assert package["version"] == relay.__version__
    assert package["type"] == "module"
    assert "dependencies" not in package


def test_the_gateway_serves_the_package_s_module(
    start_gateway: Callable[..., Gateway], redis_url: str
) -> None:
    gateway = start_gateway(redis_url)
    with urllib.request.urlopen(f"{gateway.url}/static/relay-client.js", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/javascript")
        served = response.read()
    assert served == (PACKAGE / manifest()["exports"]["."]["default"]).read_bytes()
