"""The compose deployment brought up for real: Redis, gateway replicas and nginx on a Docker engine.

One stack for the module, built from the project's own compose.yaml,
Dockerfile and deploy/nginx.conf with ``relay init``'s ``.env``, as the README
tells an operator to. The tests run in order: the later ones scale, kill and
restart parts of the stack.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.sync_api import Page, expect

from relay.server.auth import mint_token
from tests.conftest import free_port
from tests.docker_stack import ROOT, ComposeStack, DockerEngine
from tests.e2e import test_socketio
from tests.e2e.test_socketio import Listener, listening
from tests.followers import Follower, SseFollower, WsFollower
from tests.helpers import until, wait_until

# The first test's set-up builds the base images and brings the stack up: about
# two minutes on a quiet machine, more on a busy one, beyond the suite's
# default timeout.
pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(600)]

ALLOWED_ORIGIN = "http://dashboard.example"
# At most what the engine may hand out, which is what this process may have.
NOFILE_LIMIT = min(70_000, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
TYPE = "map"
# The Socket.IO tests' client, installed once for both modules.
client_script = test_socketio.client_script


@pytest.fixture(scope="module")
def stack(
    docker_engine: DockerEngine, base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeStack]:
    """The whole deployment, up and ready; removed with its volumes afterwards."""
    deployment = ComposeStack(docker_engine, tmp_path_factory.mktemp("compose"), base_image)
    deployment.prepare(
        free_port(),
        {"RELAY_ALLOWED_ORIGINS": ALLOWED_ORIGIN, "RELAY_NOFILE_LIMIT": str(NOFILE_LIMIT)},
    )
    try:
        started = time.monotonic()
        deployment.up("--build")
        print(f"\ncompose stack up in {time.monotonic() - started:.0f} s")
        yield deployment
    finally:
        deployment.down()


@pytest.fixture(scope="module")
def secrets(stack: ComposeStack) -> dict[str, str]:
    """The publisher key and token secret ``relay init`` wrote."""
    written = stack.variables()
    return {"key": written["RELAY_API_KEYS"], "secret": written["RELAY_TOKEN_SECRET"]}


@pytest.fixture(scope="module")
def token(secrets: dict[str, str]) -> str:
    """A subscriber token for every type."""
    return mint_token(secrets["secret"], "tests", workflow_types=["*"], ttl_seconds=3600)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client that leaves origins alone (the stack checks them)."""
    async with aiohttp.ClientSession() as session:
        yield session


class Publisher:
    """Numbered events into the stack: HTTP through nginx, and raw XADD inside Redis."""

    def __init__(self, http: aiohttp.ClientSession, stack: ComposeStack, key: str) -> None:
        self.http = http
        self.stack = stack
        self.key = key
        self.published: list[int] = []
        self.retries = 0

    @staticmethod
    def event(n: int, session: str = "") -> dict[str, Any]:
        return {
            "session_id": session or f"s{n % 4}",
            "workflow_type": TYPE,
            "step": f"step {n}",
            "progress": n % 100,
            "metadata": {"seq": n},
        }

    async def post(self, n: int, session: str = "") -> None:
        """Publish over HTTP with an Idempotency-Key, retried until accepted."""
        headers = {"Authorization": f"Bearer {self.key}", "Idempotency-Key": f"seq-{n}"}
        url = f"{self.stack.url}/api/workflows/progress"
        deadline = time.monotonic() + 60
        while True:
            try:
                async with self.http.post(
                    url, json=self.event(n, session), headers=headers
                ) as response:
                    if response.status == 202:
                        break
                    assert response.status in (502, 503), await response.text()
            except (aiohttp.ClientError, OSError):
                pass
            self.retries += 1
            assert time.monotonic() < deadline, f"event {n} was never accepted"
            await asyncio.sleep(0.2)
        self.published.append(n)

    def xadd(self, n: int) -> None:
        """Publish straight into the stream, as a worker in any language would."""
        event = self.event(n)
        fields = [
            "session_id",
            event["session_id"],
            "step",
            event["step"],
            "progress",
            str(event["progress"]),
            "metadata",
            json.dumps(event["metadata"]),
        ]
        self.stack.execute("redis", "redis-cli", "XADD", f"workflow:progress:{TYPE}", "*", *fields)
        self.published.append(n)


async def followers(
    http: aiohttp.ClientSession, stack: ComposeStack, token: str, count: int, *, sse: bool = True
) -> list[Follower]:
    """``count`` WebSocket followers (and one SSE follower) through nginx, each subscribed."""
    started: list[Follower] = [WsFollower(http, stack, TYPE, token) for _ in range(count)]
    if sse:
        started.append(SseFollower(http, stack, TYPE, token))
    for follower in started:
        follower.start()

    async def check() -> bool:
        return all(f.connections > 0 for f in started)

    await until(check, timeout=30, what="every follower to subscribe")
    return started


async def all_received(started: list[Follower], published: list[int]) -> None:
    """Every follower got every number once and in order; then they stop."""

    async def check() -> bool:
        return all(not f.tally(published).lost for f in started)

    await until(check, timeout=60, what="every follower to receive every event")
    for follower in started:
        tally = follower.tally(published)
        assert (tally.lost, tally.duplicated, tally.reordered) == ([], [], []), follower.name
    for follower in started:
        await follower.stop()


def upstreams(stack: ComposeStack, path: str) -> set[str]:
    """The gateway addresses nginx passed requests for ``path`` to, from its access log."""
    pattern = re.compile(rf'"GET {re.escape(path)}[^"]*" \d+ .* upstream=([\d.:]+)')
    return set(pattern.findall(stack.logs("nginx")))


METRICS_PROBE = (
    "import urllib.request; "
    "print(urllib.request.urlopen('http://127.0.0.1:9090/metrics').read().decode())"
)


def subscribers_on(stack: ComposeStack, container: str) -> int:
    """Subscribers connected to one gateway container, from its own metrics."""
    metrics = stack.engine.docker("exec", container, "python3", "-c", METRICS_PROBE)
    found = re.search(r"^relay_subscribers (\S+)$", metrics, re.MULTILINE)
    assert found, metrics
    return int(float(found.group(1)))


def fetch(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    """Status and decoded JSON body of a request; an HTTP error is an answer too."""
    request = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def test_compose_commands_need_no_secrets_in_the_shell(stack: ComposeStack) -> None:
    # compose reads .env itself: ps, logs and the rest work in a bare shell.
    assert all(not name.startswith("RELAY_") for name in stack.env())
    assert "gateway" in stack.compose("ps")
    assert stack.directory.joinpath(".env").stat().st_mode & 0o077 == 0
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0, ".env must be git-ignored"


async def test_events_reach_subscribers_on_every_replica(
    http: aiohttp.ClientSession, stack: ComposeStack, token: str, secrets: dict[str, str]
) -> None:
    started = await followers(http, stack, token, 6)
    # nginx picks a replica at random among the addresses of `gateway`: six
    # sockets may all land on one (1 in 243 with three). Add sockets until
    # they are on two, so that events cross replicas.
    gateways = stack.containers("gateway")
    while sum(subscribers_on(stack, c) > 0 for c in gateways) < 2 and len(started) < 40:
        started += await followers(http, stack, token, 1, sse=False)
    publisher = Publisher(http, stack, secrets["key"])
    for n in range(20):
        if n % 4 == 3:
            publisher.xadd(n)
        else:
            await publisher.post(n)
    await all_received(started, publisher.published)
    # The followers through nginx landed on more than one replica.
    assert len(upstreams(stack, "/ws") | upstreams(stack, "/api/workflows/events")) >= 2


SOCKETIO_REQUEST = re.compile(
    r'"(?:GET|POST) /socket\.io/\?[^"]*\bsid=([^&"\s]+)[^"]*" (\d+) .* upstream=([\d.:]+) '
)


def socketio_requests(stack: ComposeStack) -> list[tuple[str, str, str]]:
    """Every Socket.IO request with a sid nginx logged: the sid, its status and its upstream."""
    return [tuple(found) for found in SOCKETIO_REQUEST.findall(stack.logs("nginx"))]


def gateway_addresses(stack: ComposeStack) -> dict[str, str]:
    """Each gateway container's short id (its hostname) and the address nginx reaches it on."""
    return {c: f"{stack.addresses(c)[0]}:8080" for c in stack.containers("gateway")}


async def test_polling_socketio_clients_stay_with_the_gateway_of_their_session(
    http: aiohttp.ClientSession,
    stack: ComposeStack,
    token: str,
    secrets: dict[str, str],
    client_script: Path,
) -> None:
    gateways = gateway_addresses(stack)
    assert len(gateways) >= 2
    async with AsyncExitStack() as running:
        listeners: list[Listener] = []

        async def spread() -> bool:
            # Handshakes go to any replica: one more client until two own sessions.
            listener = await running.enter_async_context(listening(client_script, stack, token))
            await listener.subscribed()
            listeners.append(listener)
            owners = {sid.split(".")[0] for sid, _, _ in socketio_requests(stack)}
            return len(owners) >= 2

        await until(spread, timeout=60, what="Socket.IO sessions on two replicas")
        publisher = Publisher(http, stack, secrets["key"])
        for n in range(300, 310):
            await publisher.post(n)
        for listener in listeners:
            received = await listener.events(len(publisher.published))
            assert [line["data"]["metadata"]["seq"] for line in received] == publisher.published
            assert (await listener.seen_or_next("upgrade"))["transport"] == "websocket"
            assert not [line for line in listener.seen if line["kind"] == "connect_error"]
    requests = socketio_requests(stack)
    sids = {sid for sid, _, _ in requests}
    assert len(sids) == len(listeners)
    owners = {sid.split(".")[0] for sid in sids}
    print(f"{len(sids)} sessions on {len(owners)} replicas, {len(requests)} requests with a sid")
    # Every poll, post and upgrade reached the replica its sid names, and it knew the session.
    for sid, status, upstream in requests:
        assert upstream == gateways[sid.split(".")[0]], (sid, upstream)
        assert status in ("200", "101"), (sid, status)


def poll_status(stack: ComposeStack, sid: str) -> int:
    """The status of a poll with this sid through nginx, answered within seconds or failing."""
    url = f"{stack.url}/socket.io/?EIO=4&transport=polling&sid={sid}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_sid_naming_no_gateway_gets_a_quick_error(stack: ComposeStack) -> None:
    (redis,) = stack.containers("redis")
    (nginx,) = stack.containers("nginx")
    assert stack.execute("nginx", "getent", "hosts", redis).split()[0] == stack.addresses(redis)[0]
    # Other containers do not listen on the gateway port; no container has the third name.
    for owner in (redis, nginx, "0123456789ab"):
        started = time.monotonic()
        assert poll_status(stack, f"{owner}.forged") == 502, owner
        print(f"forged sid naming {owner}: answered in {time.monotonic() - started:.2f} s")
    # A sid of any other shape names no host at all: a gateway answers it.
    status, answer = fetch(f"{stack.url}/socket.io/?EIO=4&transport=polling&sid=evil.example")
    assert (status, answer["message"]) == (400, "unknown session id")


def test_gateways_see_the_client_not_nginx(stack: ComposeStack) -> None:
    (nginx,) = stack.containers("nginx")
    nginx_addresses = set(stack.addresses(nginx))
    clients = set(re.findall(r"^\S+\s+\|\s+([\d.]+) \[", stack.logs("nginx"), re.MULTILINE))
    seen = set(re.findall(r"ws:([\d.]+) connected", stack.logs("gateway")))
    assert seen, "no WebSocket connection was logged by a gateway"
    assert seen <= clients
    assert not seen & nginx_addresses


def test_tokens_never_reach_a_log(stack: ComposeStack, token: str) -> None:
    logs = stack.logs("nginx") + stack.logs("gateway")
    assert "token=[redacted]" in logs
    assert token not in logs
    assert token.split(".")[2] not in logs


async def test_every_setting_in_env_reaches_the_gateways(
    http: aiohttp.ClientSession, stack: ComposeStack, token: str
) -> None:
    # RELAY_ALLOWED_ORIGINS is only in .env: the gateways enforce it.
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(
            stack.ws_url, params={"token": token}, headers={"Origin": "http://elsewhere.example"}
        )
    assert refused.value.status == 403
    async with http.ws_connect(
        stack.ws_url, params={"token": token}, headers={"Origin": ALLOWED_ORIGIN}
    ) as ws:
        assert not ws.closed


def test_a_body_over_the_limit_gets_the_json_error(
    stack: ComposeStack, secrets: dict[str, str]
) -> None:
    body = b'{"session_id": "big", "metadata": {"blob": "' + b"x" * 2_000_000 + b'"}}'
    headers = {"Authorization": f"Bearer {secrets['key']}", "Content-Type": "application/json"}
    status, answer = fetch(f"{stack.url}/api/workflows/progress", body, headers)
    assert status == 413
    assert answer["error"] == "too_large"
    assert answer["detail"] == []


def test_metrics_stay_inside_the_compose_network(stack: ComposeStack) -> None:
    status, answer = fetch(f"{stack.url}/metrics")
    assert status == 404
    assert answer["error"] == "not_found"
    assert "relay_subscribers" in stack.execute("gateway", "python3", "-c", METRICS_PROBE)


def test_the_image_holds_the_pinned_versions(stack: ComposeStack) -> None:
    pinned = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    )

    def name(text: str) -> str:
        return re.sub(r"[-_.]+", "-", text).lower()

    pins = {name(package): version.strip() for package, version in pinned.items()}
    frozen = stack.execute("gateway", "pip", "freeze", "--exclude", "relay-progress").splitlines()
    installed = dict(line.split("==", 1) for line in frozen if "==" in line)
    assert installed
    wrong = {p: v for p, v in installed.items() if pins.get(name(p)) != v.strip()}
    assert not wrong, f"not the versions of constraints.txt: {wrong}"


def test_containers_get_the_file_limit(stack: ComposeStack) -> None:
    for service in ("nginx", "gateway"):
        assert stack.execute(service, "sh", "-c", "ulimit -n").strip() == str(NOFILE_LIMIT)


def test_scaled_gateways_all_take_requests(stack: ComposeStack) -> None:
    stack.up("--scale", "gateway=5", "--no-recreate")
    assert len(stack.containers("gateway")) == 5
    for _ in range(30):
        assert stack.answers("/readyz")

    def all_five() -> bool:
        return stack.answers("/readyz") and len(upstreams(stack, "/readyz")) >= 5

    wait_until(all_five, timeout=60, what="requests reaching all 5 replicas")


async def test_a_killed_replica_loses_nothing(
    http: aiohttp.ClientSession, stack: ComposeStack, token: str, secrets: dict[str, str]
) -> None:
    started = await followers(http, stack, token, 4)
    publisher = Publisher(http, stack, secrets["key"])
    for n in range(100, 120):
        await publisher.post(n)
    # The replica holding the most of them, so that some must reconnect and resume.
    victim = max(stack.containers("gateway"), key=lambda c: subscribers_on(stack, c))
    assert subscribers_on(stack, victim) > 0
    stack.engine.docker("kill", victim)
    failed = 0
    for n in range(120, 160):
        await publisher.post(n)
        failed += not stack.answers("/readyz")
    # Idempotent requests move on to a live replica; nobody sees the dead one.
    assert failed == 0
    await all_received(started, publisher.published)
    assert sum(f.connections for f in started) > len(started), "nobody had to resume"
    stack.up("--scale", "gateway=5", "--no-recreate")


async def test_redis_restart_keeps_what_was_written(
    http: aiohttp.ClientSession, stack: ComposeStack, token: str, secrets: dict[str, str]
) -> None:
    publisher = Publisher(http, stack, secrets["key"])
    for n in range(200, 210):
        await publisher.post(n, session="aof")
    stack.compose("restart", "redis")
    stack.wait_ready()
    started = await followers(http, stack, token, 1)
    await publisher.post(210, session="aof")
    await all_received(started, [210])
    # The gateways read the entries back from Redis by id: they outlived the restart.
    status, frames = fetch(
        f"{stack.url}/api/workflows/sessions/aof/events",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert status == 200
    seqs = [frame["data"]["metadata"]["seq"] for frame in frames]
    assert seqs == list(range(200, 211))


async def test_nginx_stops_without_being_killed(
    http: aiohttp.ClientSession, stack: ComposeStack, token: str
) -> None:
    (nginx,) = stack.containers("nginx")
    async with http.ws_connect(stack.ws_url, params={"token": token}) as ws:
        stopping = asyncio.get_running_loop().run_in_executor(None, stack.compose, "stop", "nginx")
        message = await ws.receive(timeout=30)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await stopping
    state = stack.inspect(nginx)["State"]
    assert isinstance(state, dict)
    assert state["ExitCode"] == 0, "nginx was killed instead of stopping"
    stack.up()


# After every asynchronous test: the browser's own event loop runs from here on.
def test_dashboard_signs_in_through_nginx_with_a_link(
    page: Page, stack: ComposeStack, secrets: dict[str, str]
) -> None:
    link = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay",
            "token",
            "--sub",
            "ops",
            "--type",
            "*",
            "--cancel",
            "--dashboard",
            "--url",
            stack.url,
        ],
        env={**stack.env(), "RELAY_TOKEN_SECRET": secrets["secret"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert link.startswith(f"{stack.url}/#token=")
    page.goto(link)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(page.locator('[data-session="s1"]')).to_be_visible()
    assert page.url == f"{stack.url}/"


def test_down_removes_every_volume(stack: ComposeStack) -> None:
    label = f"label=com.docker.compose.project={stack.name}"
    assert stack.engine.docker("volume", "ls", "-q", "--filter", label).split()
    stack.down()
    assert not stack.engine.docker("volume", "ls", "-q", "--filter", label).split()
    assert not stack.engine.docker("ps", "-aq", "--filter", label).split()
