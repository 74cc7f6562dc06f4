"""Processes the bench starts: spawn in a process group, read CPU and RSS, stop for sure."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 8.0
PROTECTED_PORT = 6379


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (never the shared Redis port)."""
    for _ in range(10):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != PROTECTED_PORT:
            return port
    raise RuntimeError("no free port found")


def raise_nofile_limit() -> int:
    """Lift this process's open-files limit to the hard limit; children inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _stat_fields(pid: int) -> tuple[str, list[str]]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces: fields are counted after its closing parenthesis.
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def proc_stat(pid: int) -> tuple[int, str, float]:
    """Parent pid, command name and CPU ms (utime + stime) of ``pid``, from /proc/<pid>/stat."""
    name, fields = _stat_fields(pid)
    return int(fields[1]), name, (int(fields[11]) + int(fields[12])) * 1000 / CLOCK_TICKS


def group_members(pgid: int) -> list[int]:
    """Every live process of process group ``pgid``: a server and the workers it forked."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                _, fields = _stat_fields(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue  # it exited while we looked
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def cpu_ms(pid: int) -> float:
    """CPU time ``pid`` has used so far."""
    return proc_stat(pid)[2]


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def listeners(port: int) -> int:
    """How many sockets listen on ``port`` (IPv4 and IPv6), from /proc/net/tcp*."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            next(rows)  # the header
            for row in rows:
                local, state = row.split()[1], row.split()[3]
                count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port
    return count


T = TypeVar("T")


def _quietly(read: Callable[[int], T], pid: int, gone: T) -> T:
    """``read(pid)``, or ``gone`` when the process exited meanwhile."""
    try:
        return read(pid)
    except (OSError, RuntimeError):
        return gone


class Proc:
    """One started process, the leader of its own process group."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, log: Path, *, forks: bool = False
    ) -> None:
        self.name = name
        self.process = process
        self.log = log
        self.forks = forks
        """Whether it forks workers into its process group, whose CPU and memory count as its."""
        self._pending = b""

    @property
    def pid(self) -> int:
        """The process id (also its process group id)."""
        return self.process.pid

    def alive(self) -> bool:
        """Whether it is still running."""
        return self.process.returncode is None

    def _members(self) -> list[int]:
        return group_members(self.pid) or [self.pid]

    def cpu_ms(self) -> float:
        """CPU time used so far; with :attr:`forks`, of the live members of its group too."""
        # Scanning /proc costs a few ms: only for processes that fork workers.
        if not self.forks:
            return cpu_ms(self.pid)
        return sum(_quietly(cpu_ms, pid, 0.0) for pid in self._members())

    def rss_kib(self) -> int:
        """Resident memory now; with :attr:`forks`, of the live members of its group too."""
        if not self.forks:
            return rss_kib(self.pid)
        return sum(_quietly(rss_kib, pid, 0) for pid in self._members())

    def send(self, message: Mapping[str, Any]) -> None:
        """Write one JSON line to its standard input."""
        stdin = self.process.stdin
        if stdin is None:
            raise RuntimeError(f"{self.name} has no stdin pipe")
        stdin.write(json.dumps(message).encode() + b"\n")

    async def receive(self, within: float) -> dict[str, Any]:
        """The next JSON line it prints on standard output."""
        stdout = self.process.stdout
        if stdout is None:
            raise RuntimeError(f"{self.name} has no stdout pipe")
        try:
            async with asyncio.timeout(within):
                line = await stdout.readline()
        except TimeoutError:
            raise RuntimeError(
                f"{self.name} said nothing for {within:.0f}s; see {self.log}"
            ) from None
        if not line:
            raise RuntimeError(f"{self.name} exited early; see {self.log}")
        message: dict[str, Any] = json.loads(line)
        return message

    async def expect(self, kind: str, within: float) -> dict[str, Any]:
        """Wait for a message of type ``kind``; an ``error`` message raises."""
        message = await self.receive(within)
        if message.get("type") == "error":
            raise RuntimeError(f"{self.name}: {message.get('message')}")
        if message.get("type") != kind:
            raise RuntimeError(f"{self.name}: expected {kind!r}, got {message}")
        return message

    async def wait(self, within: float) -> int:
        """Wait for it to exit by itself; its exit code."""
        async with asyncio.timeout(within):
            return await self.process.wait()

    async def stop(self) -> None:
        """SIGTERM to its group, then SIGKILL if it lingers."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            with contextlib.suppress(TimeoutError):
                await self.wait(STOP_TIMEOUT)
        # A group member that outlived its leader is ours too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)


async def spawn(
    name: str,
    argv: list[str],
    log_dir: Path,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    pipes: bool = False,
    quiet: bool = False,
    forks: bool = False,
) -> Proc:
    """Start ``argv`` in its own process group, stderr (and stdout unless piped) to a log.

    ``quiet`` drops its standard output, for a client that prints every reply;
    ``forks`` says it forks workers (see :attr:`Proc.forks`).
    """
    log = log_dir / f"{name}.log"
    with log.open("ab") as sink:
        stdout: int | IO[bytes] = sink
        if pipes or quiet:
            stdout = asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=sink,
            start_new_session=True,
            limit=1 << 24,
        )
    return Proc(name, process, log, forks=forks)


async def stop_all(procs: Iterable[Proc]) -> None:
    """Stop every process, in reverse start order."""
    for proc in reversed(list(procs)):
        await proc.stop()


async def wait_http_ok(
    url: str, proc: Proc, within: float = 20.0, *, port: int | None = None, listening: int = 1
) -> None:
    """Poll ``url`` until it answers 200, failing fast if ``proc`` dies.

    With ``port``, only once ``listening`` sockets listen on it: each worker of
    a gateway run with ``--workers`` binds the port once it is ready to serve.
    """
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited at start; see {proc.log}")
            if port is not None and listeners(port) < listening:
                await asyncio.sleep(0.1)
                continue
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as answer:
                    if answer.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} after {within:.0f}s; see {proc.log}")
