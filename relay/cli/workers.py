"""``relay serve --workers N``: N gateway processes on one host and port.

The parent process reserves the address, forks the workers and from then on
only watches them. Each worker is a whole gateway (its own stream reader,
session view and hub) that listens on the same port with ``SO_REUSEPORT``, so
the kernel spreads new connections over the workers; they share nothing but
Redis. SIGTERM and SIGINT are passed on to every worker, and the parent exits
once all have stopped.

A worker that exits while nobody asked it to is not started again: the parent
logs it, stops the others and exits 1, so that whatever runs the gateway (a
container's restart policy, systemd, Kubernetes) sees the failure, counts it
and restarts the whole service with its own backoff. Restarting one worker
quietly inside a healthy-looking process would hide a crash loop from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from relay.cli.addresses import cannot_listen, host_port

if TYPE_CHECKING:
    from relay.server.settings import Settings

logger = logging.getLogger(__name__)

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass(frozen=True, slots=True)
class Worker:
    """One worker's place among the others."""

    number: int
    """1 to ``count``; named in every log line of the worker."""
    count: int
    parent_gone: int
    """A pipe's read end, readable (at its end) once the parent process has exited."""

    def metrics_port(self, settings: Settings) -> int | None:
        """The port of this worker's own ``/metrics``: one per worker, from ``metrics_port`` up."""
        if settings.metrics_port is None:
            return None
        # Port 0 asks the system for a free port, for each worker apart.
        return settings.metrics_port + self.number - 1 if settings.metrics_port else 0


RunOne = Callable[["Settings", Worker], int]


def unsupported_reason() -> str | None:
    """Why this platform cannot run several workers on one port, or None when it can."""
    if not hasattr(socket, "SO_REUSEPORT"):
        return "this platform has no SO_REUSEPORT to share one port between processes"
    if not hasattr(os, "fork"):
        return "this platform cannot fork worker processes"
    return None


def reserve_address(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host`` and ``port`` with ``SO_REUSEPORT``.

    It keeps the port, the one the system chose when ``port`` is 0, for the
    workers, which bind it with ``SO_REUSEPORT`` too; a port some other
    program holds fails here, once, before any worker starts. Being no
    listener, it is never given a connection.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _ended(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _signal_all(children: dict[int, int], signum: int) -> None:
    for pid in list(children):
        # One that exited already is collected by the wait loop.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _run_child(run_one: RunOne, settings: Settings, worker: Worker, closing: list[int]) -> NoReturn:
    """The forked worker's whole life; it never returns into the parent's code."""
    code = 1
    try:
        for fd in closing:
            os.close(fd)
        # The parent's handlers forward signals to its children; a worker
        # stops on them instead, through its event loop's own handlers.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        from relay.cli.logs import configure_logging

        configure_logging(settings.log_level, settings.log_format, worker=worker.number)
        code = run_one(settings, worker)
    except KeyboardInterrupt:
        code = 0
    except BaseException:
        logger.exception("worker %d failed", worker.number)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_workers(settings: Settings, run_one: RunOne) -> int:
    """Serve with ``settings.worker_count`` workers, each running ``run_one``; the exit code.

    0 when every worker stopped after SIGTERM or SIGINT; 1 when one exited
    unasked (the others are stopped first) or the address cannot be had; 2
    when the platform cannot share a port between processes.
    """
    from relay.cli.logs import configure_logging

    reason = unsupported_reason()
    if reason is not None:
        print(f"relay serve: --workers {settings.workers}: {reason}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        reservation = reserve_address(settings.host, settings.port)
    except OSError as exc:
        print(cannot_listen(settings.host, settings.port, exc), file=sys.stderr)
        return 1
    with reservation:
        port = int(reservation.getsockname()[1])
        supervisor = Supervisor(run_one, settings.model_copy(update={"port": port}))
        supervisor.start(reservation)
        if supervisor.failed:
            supervisor.stop()
        else:
            pids = ", ".join(str(pid) for pid in supervisor.children)
            where = host_port(settings.host, port)
            logger.info("%d workers on http://%s (pids %s)", len(supervisor.children), where, pids)
        return supervisor.watch()


class Supervisor:
    """The parent's view of its workers: starts them, passes signals on, watches them end."""

    def __init__(self, run_one: RunOne, settings: Settings) -> None:
        self.run_one = run_one
        self.settings = settings
        self.children: dict[int, int] = {}
        """pid -> worker number, of the workers still running."""
        self.stopping = False
        self.failed = False

    def start(self, reservation: socket.socket) -> None:
        """Fork every worker; on return the stop signals are passed on to them.

        Those signals are blocked while forking, so one arriving meanwhile
        reaches every worker once all are known. A fork that fails sets
        :attr:`failed` and starts no more.
        """
        count = self.settings.worker_count
        read_end, write_end = os.pipe()
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for number in range(1, count + 1):
                try:
                    pid = os.fork()
                except OSError as exc:
                    logger.error("cannot start worker %d: %s", number, exc)
                    self.failed = True
                    break
                if pid == 0:
                    worker = Worker(number=number, count=count, parent_gone=read_end)
                    closing = [write_end, reservation.fileno()]
                    _run_child(self.run_one, self.settings, worker, closing)
                self.children[pid] = number
        finally:
            # The write end stays open, unused, for as long as the parent lives:
            # workers see its pipe end however the parent went, SIGKILL included.
            os.close(read_end)
            for signum in STOP_SIGNALS:
                signal.signal(signum, self._forward)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        _signal_all(self.children, signum)

    def stop(self) -> None:
        """Ask every worker still running to stop."""
        self.stopping = True
        _signal_all(self.children, signal.SIGTERM)

    def watch(self) -> int:
        """Wait until every worker has ended; 1 when any ended unasked or failed, else 0."""
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            number = self.children.pop(pid, None)
            if number is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self.stopping and code == 0:
                logger.info("worker %d (pid %d) stopped", number, pid)
                continue
            self.failed = True
            if self.stopping:
                logger.error("worker %d (pid %d) %s while stopping", number, pid, _ended(code))
            else:
                logger.error(
                    "worker %d (pid %d) %s; stopping the other workers and exiting, "
                    "for whatever runs relay to restart it",
                    number,
                    pid,
                    _ended(code),
                )
                self.stop()
        return 1 if self.failed else 0
