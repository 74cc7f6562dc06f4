"""The import direction between relay's packages: protocol <- client <- server <- cli."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import relay

PACKAGE = Path(relay.__file__).parent

# What each package may import of relay, besides itself.
ALLOWED: dict[str, set[str]] = {
    "protocol": set(),
    "client": {"relay.protocol"},
    # The gateway publishes through the client's stream publisher, and connects by
    # the same Redis URLs as the reporters; nothing else of the client.
    "server": {"relay.protocol", "relay.client.stream_publisher", "relay.client.redis_urls"},
    # The tools sit on top of everything, and read the version from the package itself.
    "cli": {"relay", "relay.protocol", "relay.client", "relay.server"},
}


def imported_modules(path: Path) -> set[str]:
    """Every ``relay...`` module a source file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "relay" or name.startswith("relay.")}


def allowed(package: str, module: str) -> bool:
    own = f"relay.{package}"
    permitted = {own, *ALLOWED[package]}
    return any(module == p or module.startswith(p + ".") for p in permitted)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_lies_below_it(package: str) -> None:
    wrong = {
        f"{path.relative_to(PACKAGE.parent)}: {module}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for module in imported_modules(path)
        if not allowed(package, module)
    }
    assert not wrong, f"relay.{package} imports outside its direction: {sorted(wrong)}"


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    source = tmp_path / "bad.py"
    source.write_text("def f():\n    from relay.server.hub import Hub\n    return Hub\n")
    assert not allowed("client", next(iter(imported_modules(source))))


WORKER_PROBE = """
import json, sys
from relay import AsyncReporter, HttpReporter, ProgressEvent, Reporter, ReportingSession
print(json.dumps(sorted(sys.modules)))
"""

GATEWAY_ONLY = ("aiohttp", "prometheus_client", "jwt", "fakeredis", "rich", "pydantic_settings")


def test_a_worker_import_loads_no_gateway_code() -> None:
    out = subprocess.run(
        [sys.executable, "-c", WORKER_PROBE], check=True, capture_output=True, text=True
    ).stdout
    modules = json.loads(out)
    gateway = [m for m in modules if m.split(".")[:2] in (["relay", "server"], ["relay", "cli"])]
    heavy = [m for m in modules if m.split(".")[0] in GATEWAY_ONLY]
    assert not gateway, gateway
    assert not heavy, sorted({m.split(".")[0] for m in heavy})


def test_every_public_name_resolves() -> None:
    for name in relay.__all__:
        assert getattr(relay, name) is not None, name
    with pytest.raises(AttributeError):
        _ = relay.NoSuchName


def test_the_architecture_page_lists_every_module() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    modules = sorted(
        str(path.relative_to(PACKAGE))
        for package in ALLOWED
        for path in (PACKAGE / package).glob("*.py")
    )
    assert modules
    assert [module for module in modules if f"`{module}`" not in page] == []
