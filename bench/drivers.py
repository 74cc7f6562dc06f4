"""Driving the load generators: the Node subscriber and publisher processes, wrk, the reporter."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import shutil
import sys
import time
from typing import Any

import aiohttp
from config import LOADGEN_DIR, SESSIONS, WORKFLOW_TYPE, Config
from procs import Proc, spawn
from systems import Deployment

CONNECT_CONCURRENCY = 100
RUN_SLACK_SECONDS = 30.0
DETAILS = "analyzing land cover: forests, rivers, roads"


def event_body(run: int, seq: int, session: int) -> dict[str, Any]:
    """The same event the Node publisher sends, stamped now on the shared monotonic clock."""
    return {
        "session_id": f"bench-{session}",
        "workflow_type": WORKFLOW_TYPE,
        "step": "analyzing",
        "progress": 45.5,
        "metadata": {
            "run": run,
            "seq": seq,
            "session": session,
            "t": time.monotonic_ns() // 1000,
            "details": DETAILS,
        },
    }


async def post_event(url: str, body: dict[str, Any]) -> int:
    """POST one event; the answer's status code."""
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as answer:
        return answer.status


async def _node(name: str, script: str, options: dict[str, Any], cfg: Config) -> Proc:
    argv = ["node", str(LOADGEN_DIR / script), json.dumps(options)]
    return await spawn(name, argv, cfg.log_dir, cwd=LOADGEN_DIR, pipes=True)


class Subscribers:
    """A Node process holding many subscriber connections, driven over stdin and stdout."""

    def __init__(self, proc: Proc, ready: dict[str, Any]) -> None:
        self.proc = proc
        self.ready = ready

    @classmethod
    async def start(
        cls, dep: Deployment, cfg: Config, *, count: int, urls: list[str], stalled: int, name: str
    ) -> Subscribers:
        """Connect ``count`` subscribers spread over ``urls``; the first ``stalled`` may pause."""
        options = {
            "kind": dep.client,
            "urls": urls,
            "count": count,
            "event": f"workflow:progress:{WORKFLOW_TYPE}",
            "stalled": stalled,
            "connectConcurrency": CONNECT_CONCURRENCY,
        }
        proc = await _node(name, "subscribers.js", options, cfg)
        try:
            ready = await proc.expect("ready", within=120)
        except BaseException:
            await proc.stop()
            raise
        return cls(proc, ready)

    async def begin(self, run: int, events: int, sessions: int = SESSIONS) -> float:
        """Expect ``events`` events of ``run`` from now on; the loadgen's CPU ms so far."""
        self.proc.send({"cmd": "begin", "run": run, "events": events, "sessions": sessions})
        return float((await self.proc.expect("begun", within=30))["cpuMs"])

    async def pause(self) -> None:
        """Stop reading on the stalled subscribers."""
        self.proc.send({"cmd": "pause"})
        await self.proc.expect("paused", within=10)

    async def resume(self) -> None:
        """Read again on the stalled subscribers."""
        self.proc.send({"cmd": "resume"})
        await self.proc.expect("resumed", within=10)

    async def collect(self, drain_seconds: float, rejected: list[int]) -> dict[str, Any]:
        """Wait until every accepted event arrived (or the drain time passed); the counts."""
        command = {"cmd": "collect", "drainMs": int(drain_seconds * 1000), "rejected": rejected}
        self.proc.send(command)
        return await self.proc.expect("stats", within=drain_seconds + RUN_SLACK_SECONDS)

    async def stop(self) -> None:
        """Close every connection and end the process."""
        await self.proc.stop()


async def publish_open_loop(
    url: str, rate: int, seconds: float, run: int, cfg: Config, name: str
) -> dict[str, Any]:
    """Run the open-loop publisher to the end; its report."""
    options = {
        "url": url,
        "rate": rate,
        "seconds": seconds,
        "run": run,
        "sessions": SESSIONS,
        "type": WORKFLOW_TYPE,
        "sockets": 128,
        "drainMs": int(cfg.drain_seconds * 1000) + 5000,
    }
    proc = await _node(name, "publisher.js", options, cfg)
    try:
        return await proc.expect("done", within=seconds + cfg.drain_seconds + RUN_SLACK_SECONDS)
    finally:
        await proc.stop()


async def publish_batches(url: str, cfg: Config, name: str) -> dict[str, Any]:
    """Run the closed-loop batch publisher; its report."""
    options = {
        "url": url,
        "clients": cfg.w4_batch_clients,
        "batchSize": cfg.w4_batch_size,
        "seconds": cfg.w4_seconds,
        "type": WORKFLOW_TYPE,
        "sessions": SESSIONS,
    }
    proc = await _node(name, "batch.js", options, cfg)
    try:
        return await proc.expect("done", within=cfg.w4_seconds + RUN_SLACK_SECONDS)
    finally:
        await proc.stop()


async def publish_reporter(redis_url: str, cfg: Config, name: str) -> dict[str, Any]:
    """Run the AsyncReporter publisher; its report (CPU ms included)."""
    argv = [sys.executable, str(LOADGEN_DIR / "reporter_load.py"), "--redis-url", redis_url]
    argv += ["--tasks", str(cfg.w4_reporter_tasks), "--seconds", str(cfg.w4_seconds)]
    proc = await spawn(name, argv, cfg.log_dir, pipes=True)
    try:
        return await proc.expect("done", within=cfg.w4_seconds + RUN_SLACK_SECONDS)
    finally:
        await proc.stop()


_WRK_LATENCY = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests, req/s, p50/p99 ms and error counts from wrk's text output."""
    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if requests is None or rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    latency = {f"p{p}_ms": float(v) * _WRK_UNITS[u] for p, v, u in _WRK_LATENCY.findall(output)}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests": int(requests.group(1)),
        "rps": float(rate.group(1)),
        **latency,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else None,
    }


async def run_wrk(url: str, cfg: Config) -> dict[str, Any]:
    """``wrk -t1 -c64 -d10s --latency`` POSTing the event to ``url``."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (run the setup: python bench/run.py --setup)")
    argv = [binary, "-t1", f"-c{cfg.w1_connections}", f"-d{cfg.w1_seconds}s", "--latency"]
    argv += ["-s", str(LOADGEN_DIR / "post.lua"), url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with asyncio.timeout(cfg.w1_seconds + RUN_SLACK_SECONDS):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {**parse_wrk(output.decode()), "wrk_cpu_ms": round(used * 1000, 1)}
