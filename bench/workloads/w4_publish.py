"""W4 publish paths (relay only): the batch endpoint, and AsyncReporter straight to Redis."""

from __future__ import annotations

from typing import Any

from config import Config
from drivers import publish_batches, publish_reporter
from meters import CpuMeter
from systems import deploy

SYSTEMS = ("relay",)


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """Events/s through each path, with the servers' CPU per 1,000 events."""
    async with deploy(system, cfg, "W4") as dep:
        meter = CpuMeter(dep.servers)
        batch_url = dep.publish_url() + "/batch"
        batch = await publish_batches(batch_url, cfg, "W4-batch")
        batch_cpu = meter.read()
        meter = CpuMeter(dep.servers)
        reporter = await publish_reporter(dep.redis_url, cfg, "W4-reporter")
        reporter_cpu = meter.read()
    return {
        "batch": {
            **batch,
            "clients": cfg.w4_batch_clients,
            "batch_size": cfg.w4_batch_size,
            "server_cpu_ms_per_1k": batch_cpu.per_thousand(batch["events"]),
            **batch_cpu.as_dict(),
        },
        "reporter": {
            **reporter,
            "tasks": cfg.w4_reporter_tasks,
            "server_cpu_ms_per_1k": reporter_cpu.per_thousand(reporter["events"]),
            **reporter_cpu.as_dict(),
        },
    }
