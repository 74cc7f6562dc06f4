"""W1 ingest: wrk POSTs the event to instance A as fast as it answers; no subscribers."""

from __future__ import annotations

from typing import Any

from config import Config
from drivers import run_wrk
from meters import CpuMeter
from systems import deploy

SYSTEMS = ("relay", "relay-workers", "node", "pysio", "bare")


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """req/s, p50/p99 and server CPU (instances plus Redis) per 1,000 requests."""
    async with deploy(system, cfg, "W1") as dep:
        meter = CpuMeter(dep.servers)
        figures = await run_wrk(dep.publish_url(), cfg)
        cpu = meter.read()
    return {
        **figures,
        "cpu_ms_per_1k_req": cpu.per_thousand(figures["requests"]),
        "unattributed_cpu_ms": round(cpu.unattributed_ms(figures["wrk_cpu_ms"]), 1),
        **cpu.as_dict(),
    }
