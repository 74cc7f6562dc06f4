"""A real Docker engine, locally built base images and the compose stack, for deployment tests.

Registered as a plugin in ``tests/conftest.py`` (the ``docker_engine`` and
``base_image`` fixtures); ``bench/compose.py`` drives the same classes.

No image registry needs to be reachable: the base image is built here with
``debootstrap`` from the machine's Debian mirror and ``docker import``, and it
carries Debian's python3, redis-server and nginx, so one image stands in for
``python:3.11-slim``, ``redis:7-alpine`` and ``nginx:1.27-alpine`` alike.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import OnLoopback, answers_ok, wait_until

ROOT = Path(__file__).resolve().parents[1]
DOCKER = shutil.which("docker", path="/usr/bin") or shutil.which("docker")
COMPOSE = shutil.which("docker-compose")
DOCKERD = shutil.which("dockerd")
DEBOOTSTRAP = shutil.which("debootstrap")
BASE_PACKAGES = ("python3", "python3-venv", "redis-server", "nginx", "wget", "ca-certificates")
# The host's trust store: pip in an image build must trust what this machine
# trusts (a TLS-inspecting proxy's certificate included).
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# What an image build needs of the project (the rest is left out by .dockerignore).
PROJECT_FILES = (
    "compose.yaml",
    "Dockerfile",
    ".dockerignore",
    "deploy",
    "pyproject.toml",
    "README.md",
    "constraints.txt",
    "relay",
    "clients/js/relay-client.js",
)
ENGINE_TIMEOUT = 60.0


def unavailable(reason: str) -> None:
    """Skip with the reason, except on CI, where this machine kind can run it all: fail."""
    message = f"docker end-to-end tests cannot run here: {reason}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def run(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure, the assertion shows what it printed."""
    result = subprocess.run(
        args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


class DockerEngine:
    """The engine the tests talk to: one already running, or a ``dockerd`` of their own."""

    def __init__(self, env: dict[str, str], process: subprocess.Popen[bytes] | None) -> None:
        self.env = env
        self.process = process

    @staticmethod
    def answers(env: dict[str, str]) -> bool:
        """True when ``docker info`` reaches an engine with this environment."""
        assert DOCKER is not None
        try:
            return run([DOCKER, "info"], env=env, timeout=15, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    @classmethod
    def start(cls, workdir: Path) -> DockerEngine:
        """The running engine if there is one, else a private ``dockerd`` in ``workdir``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        if cls.answers(env):
            return cls(env, None)
        assert DOCKERD is not None
        socket_path = workdir / "docker.sock"
        env["DOCKER_HOST"] = f"unix://{socket_path}"
        with (workdir / "dockerd.log").open("ab") as log:
            process = subprocess.Popen(
                [
                    DOCKERD,
                    "--host",
                    env["DOCKER_HOST"],
                    "--data-root",
                    str(workdir / "data"),
                    "--exec-root",
                    str(workdir / "exec"),
                    "--pidfile",
                    str(workdir / "dockerd.pid"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        engine = cls(env, process)
        try:
            wait_until(
                lambda: engine._alive() and cls.answers(env), timeout=ENGINE_TIMEOUT, what="dockerd"
            )
        except BaseException:
            engine.stop()
            raise
        return engine

    def _alive(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"dockerd exited with {self.process.returncode}")
        return True

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """A docker command's output."""
        assert DOCKER is not None
        return run([DOCKER, *args], env=self.env, timeout=timeout, check=check).stdout

    def stop(self) -> None:
        """Stop the ``dockerd`` this started (and with it its containerd); leave others be."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def debian_mirror() -> str:
    """The Debian mirror this machine installs from."""
    sources = [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]
    for path in sources:
        if path.exists():
            text = path.read_text(encoding="utf-8")
            found = re.search(
                r"^(?:URIs:|deb(?:\s+\[[^]]*\])?)\s+(https?://\S+/debian)/?\s", text, re.M
            )
            if found:
                return found.group(1)
    return DEFAULT_MIRROR


def debian_suite() -> str:
    """This machine's Debian release name, which debootstrap knows how to build."""
    os_release = Path("/etc/os-release").read_text(encoding="utf-8")
    found = re.search(r"^VERSION_CODENAME=(\w+)$", os_release, re.MULTILINE)
    return found.group(1) if found else "bookworm"


def build_base_image(engine: DockerEngine, workdir: Path, tag: str) -> None:
    """A minimal Debian image with python3, redis-server and nginx, built with no registry."""
    assert DEBOOTSTRAP is not None
    rootfs = workdir / "rootfs"
    run(
        [
            DEBOOTSTRAP,
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            debian_suite(),
            str(rootfs),
            debian_mirror(),
        ],
        timeout=600,
    )
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    assert DOCKER is not None
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [
            DOCKER,
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            f"ENV PIP_CERT={HOST_CA_BUNDLE}",
            "-",
            tag,
        ],
        stdin=tar.stdout,
        env=engine.env,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert tar.stdout is not None
    tar.stdout.close()
    assert tar.wait(timeout=60) == 0
    assert imported.returncode == 0, imported.stderr
    shutil.rmtree(rootfs, ignore_errors=True)


class ComposeStack(OnLoopback):
    """The project's compose deployment in a folder of its own, under its own project name."""

    def __init__(self, engine: DockerEngine, directory: Path, base_image: str) -> None:
        assert COMPOSE is not None
        self.engine = engine
        self.directory = directory
        self.name = f"relaytest{secrets.token_hex(4)}"
        self.base_image = base_image
        self.port = 0

    def prepare(self, port: int, settings: dict[str, str] | None = None) -> dict[str, str]:
        """Copy the deployment, write its ``.env`` with ``relay init``; the variables written."""
        for name in PROJECT_FILES:
            source = ROOT / name
            # Links stay links, as in a checkout (relay/server/static links to clients/js).
            if source.is_dir():
                shutil.copytree(
                    source,
                    self.directory / name,
                    symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"),
                )
            else:
                (self.directory / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, self.directory / name)
        run([sys.executable, "-m", "relay", "init", "--dir", str(self.directory)], env=self.env())
        self.port = port
        extra = {
            "RELAY_PUBLIC_PORT": str(port),
            "RELAY_PYTHON_IMAGE": self.base_image,
            "RELAY_REDIS_IMAGE": self.base_image,
            "RELAY_NGINX_IMAGE": self.base_image,
            "RELAY_GATEWAY_IMAGE": f"{self.name}-gateway:test",
            **(settings or {}),
        }
        with (self.directory / ".env").open("a", encoding="utf-8") as env_file:
            env_file.writelines(f"{key}={value}\n" for key, value in extra.items())
        return self.variables()

    def variables(self) -> dict[str, str]:
        """What ``.env`` holds."""
        lines = (self.directory / ".env").read_text(encoding="utf-8").splitlines()
        pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
        return {key.strip(): value.strip() for key, value in pairs}

    def env(self) -> dict[str, str]:
        """The shell compose runs in: the engine's, and no RELAY_* variable of its own."""
        return dict(self.engine.env)

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        """A compose command in the stack's folder; its output."""
        assert COMPOSE is not None
        command = [COMPOSE, "--ansi", "never", "-p", self.name, *args]
        return run(command, env=self.env(), cwd=self.directory, timeout=timeout, check=check).stdout

    def up(self, *args: str) -> None:
        """``up -d`` with the given options, then wait until every gateway and nginx answer."""
        self.compose("up", "-d", *args, timeout=900)
        self.wait_ready()

    def containers(self, service: str) -> list[str]:
        """Ids of the service's running containers."""
        labels = [
            f"com.docker.compose.project={self.name}",
            f"com.docker.compose.service={service}",
        ]
        filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
        return self.engine.docker("ps", "-q", *filters).split()

    def inspect(self, container: str) -> dict[str, object]:
        """``docker inspect`` of one container."""
        found = json.loads(self.engine.docker("inspect", container))
        assert isinstance(found, list)
        assert isinstance(found[0], dict)
        return found[0]

    def healthy(self, service: str) -> int:
        """How many of the service's containers report healthy."""
        count = 0
        for container in self.containers(service):
            state = self.inspect(container)["State"]
            assert isinstance(state, dict)
            health = state.get("Health")
            count += isinstance(health, dict) and health.get("Status") == "healthy"
        return count

    def wait_ready(self, timeout: float = 180) -> None:
        """Every gateway container healthy, and nginx passing requests to them."""

        def ready() -> bool:
            wanted = len(self.containers("gateway"))
            return wanted > 0 and self.healthy("gateway") == wanted and self.answers("/readyz")

        wait_until(ready, timeout=timeout, what="every gateway healthy behind nginx")

    def answers(self, path: str) -> bool:
        """True when nginx answers ``path`` with 200."""
        return answers_ok(self.url + path, timeout=3)

    def addresses(self, container: str) -> list[str]:
        """The container's addresses, one per network it is on."""
        settings = self.inspect(container)["NetworkSettings"]
        assert isinstance(settings, dict)
        return [network["IPAddress"] for network in settings["Networks"].values()]

    def logs(self, service: str) -> str:
        """Everything the service's containers printed."""
        return self.compose("logs", "--no-color", service)

    def execute(self, service: str, *command: str) -> str:
        """A command's output in the service's first container."""
        return self.compose("exec", "-T", service, *command, timeout=60)

    def down(self) -> None:
        """Remove the containers, networks, volumes and the built image."""
        self.compose("down", "-v", "--remove-orphans", "--rmi", "local", timeout=180, check=False)
        self.engine.docker("rmi", "-f", f"{self.name}-gateway:test", check=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A Docker engine: the machine's own, or a ``dockerd`` these tests start and stop."""
    if DOCKER is None or COMPOSE is None:
        unavailable("docker and docker-compose are not installed (apt docker.io docker-compose)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    if not DockerEngine.answers(env) and (DOCKERD is None or os.geteuid() != 0):
        unavailable("no Docker engine runs, and only root can start dockerd")
    # A short path: the engine's sockets live under it, and unix socket paths are short.
    workdir = Path(tempfile.mkdtemp(prefix="relay-dockerd-"))
    engine = DockerEngine.start(workdir)
    try:
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def base_image(
    docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The tag of a locally built Debian base image, removed afterwards."""
    if DEBOOTSTRAP is None or os.geteuid() != 0:
        unavailable("building a base image needs debootstrap (apt debootstrap) and root")
    tag = f"relay-test-base:{secrets.token_hex(4)}"
    build_base_image(docker_engine, tmp_path_factory.mktemp("base-image"), tag)
    try:
        yield tag
    finally:
        docker_engine.docker("rmi", "-f", tag, check=False)
