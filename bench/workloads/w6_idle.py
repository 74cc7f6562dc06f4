"""W6 idle cost: what an idle deployment costs Redis, per gateway process, with 1 or 2 workers.

Every gateway process (each worker of ``relay serve --workers``) runs a stream
reader of its own, and an idle reader still sends Redis a few commands a
second (discovery ticks and blocked reads sent again). Nothing is published:
the deployment is started, left to settle, and then Redis's commands
(``INFO commandstats``) and CPU (``INFO cpu``) are counted over the interval.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio
from config import Config
from meters import CpuMeter
from systems import SPECS, deploy

SYSTEMS = ("relay", "relay-workers")
# Past the first discovery ticks and the reader's start.
SETTLE_SECONDS = 3.0


async def _redis_cpu_s(client: redis.asyncio.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _calls(client: redis.asyncio.Redis) -> int:
    stats = await client.info("commandstats")
    # CONFIG (the reset) and INFO (these reads) are the bench's, not the gateways'.
    mine = ("cmdstat_config", "cmdstat_info")
    return sum(int(stat["calls"]) for name, stat in stats.items() if name not in mine)


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """Redis commands/s and CPU ms/s of the idle deployment, in all and per gateway process."""
    spec = SPECS[system]
    processes = spec.instances * spec.workers
    async with deploy(system, cfg, "W6") as dep:
        client = redis.asyncio.Redis.from_url(dep.redis_url, decode_responses=True)
        try:
            await asyncio.sleep(SETTLE_SECONDS)
            gateways = [instance.proc for instance in dep.instances]
            meter = CpuMeter(gateways)
            await client.config_resetstat()
            cpu_before = await _redis_cpu_s(client)
            began = time.monotonic()
            await asyncio.sleep(cfg.w6_seconds)
            elapsed = time.monotonic() - began
            calls = await _calls(client)
            redis_ms = (await _redis_cpu_s(client) - cpu_before) * 1000
            gateway_cpu = meter.read()
        finally:
            await client.aclose()
    commands_per_s = calls / elapsed
    redis_ms_per_s = redis_ms / elapsed
    return {
        "gateway_processes": processes,
        "seconds": round(elapsed, 1),
        "redis_commands_per_s": round(commands_per_s, 2),
        "redis_cpu_ms_per_s": round(redis_ms_per_s, 2),
        "redis_commands_per_s_per_process": round(commands_per_s / processes, 2),
        "redis_cpu_ms_per_s_per_process": round(redis_ms_per_s / processes, 3),
        "gateway_cpu_ms_per_s": round(gateway_cpu.total() / elapsed, 2),
        **gateway_cpu.as_dict(),
    }
