"""The distribution's dependencies cover what each package imports.

A worker installs the base dependencies only, so relay.protocol and
relay.client may import nothing else; the gateway and the tools may also use
the ``server`` extra. An import inside ``try``/``except ImportError`` is
optional and may come from any extra (uvloop from ``speed``).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "relay"

# Import names whose distribution is called otherwise (after normalising). pydantic
# installs pydantic_core at the exact version it needs, so pydantic provides it.
DISTRIBUTION_OF = {"jwt": "pyjwt", "yaml": "pyyaml", "pydantic_core": "pydantic"}

# What a worker imports: the package's own __init__, the protocol and the client.
WORKER_PARTS = ("protocol", "client")


def normalise(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements: list[str]) -> set[str]:
    """The distribution each requirement string names, without extras or versions."""
    names = set()
    for requirement in requirements:
        found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
        assert found, requirement
        names.add(normalise(found.group()))
    return names


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def catches_import_error(node: ast.Try) -> bool:
    names: set[str] = set()
    for handler in node.handlers:
        if handler.type is not None:
            kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
            names.update(kind.id for kind in kinds if isinstance(kind, ast.Name))
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def third_party_imports(source: str) -> tuple[set[str], set[str]]:
    """Top-level names of what runs imports: (required, optional).

    Optional imports sit in the body of a ``try`` that catches ImportError;
    imports under ``if TYPE_CHECKING:`` never run and are left out.
    """
    required: set[str] = set()
    optional: set[str] = set()

    def visit(node: ast.AST, guarded: bool) -> None:
        child: ast.AST
        if isinstance(node, ast.If) and is_type_checking(node):
            for child in node.orelse:
                visit(child, guarded)
            return
        if isinstance(node, ast.Try) and catches_import_error(node):
            for child in node.body:
                visit(child, True)
            for child in [*node.handlers, *node.orelse, *node.finalbody]:
                visit(child, guarded)
            return
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            modules = []
        for module in modules:
            top = module.split(".")[0]
            if top != "relay" and top not in sys.stdlib_module_names:
                (optional if guarded else required).add(top)
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(ast.parse(source), False)
    return required, optional


def unprovided(source: str, provided: set[str], extras: set[str]) -> set[str]:
    """Imports of ``source`` that neither ``provided`` nor, when optional, ``extras`` install."""
    required, optional = third_party_imports(source)

    def distribution(name: str) -> str:
        return DISTRIBUTION_OF.get(name, normalise(name))

    return {name for name in required if distribution(name) not in provided} | {
        name for name in optional if distribution(name) not in provided | extras
    }


def is_worker_module(path: Path) -> bool:
    relative = path.relative_to(PACKAGE).parts
    return relative == ("__init__.py",) or relative[0] in WORKER_PARTS


def test_each_module_imports_only_what_its_install_provides() -> None:
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    base = requirement_names(project["dependencies"])
    server = base | requirement_names(extras["server"])
    every_extra = set().union(*(requirement_names(listed) for listed in extras.values()))
    missing = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        provided = base if is_worker_module(path) else server
        found = unprovided(path.read_text(encoding="utf-8"), provided, every_extra)
        if found:
            missing[str(path.relative_to(ROOT))] = sorted(found)
    assert not missing, f"imports no dependency provides: {missing}"


def test_the_checker_sees_what_an_install_lacks() -> None:
    source = (
        "import json\n"
        "import jwt\n"
        "from yaml import safe_load\n"
        "try:\n    import uvloop\nexcept ImportError:\n    uvloop = None\n"
        "if TYPE_CHECKING:\n    import rich\n"
    )
    assert third_party_imports(source) == ({"jwt", "yaml"}, {"uvloop"})
    assert unprovided(source, {"orjson"}, {"uvloop"}) == {"jwt", "yaml"}
    assert unprovided(source, {"pyjwt"}, set()) == {"yaml", "uvloop"}
    assert unprovided(source, {"pyjwt", "pyyaml"}, {"uvloop"}) == set()


def test_the_worker_set_is_what_a_worker_imports() -> None:
    assert is_worker_module(PACKAGE / "__init__.py")
    assert is_worker_module(PACKAGE / "client" / "reporters.py")
    assert not is_worker_module(PACKAGE / "server" / "app.py")
    assert not is_worker_module(PACKAGE / "__main__.py")


def test_a_development_install_includes_the_server() -> None:
    project = pyproject()["project"]
    assert f"{project['name']}[server]" in project["optional-dependencies"]["dev"]


def test_the_version_is_the_package_s_own() -> None:
    config = pyproject()
    assert "version" in config["project"]["dynamic"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "relay.__version__"}
