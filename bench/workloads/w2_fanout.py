"""W2 fan-out: subscribers spread over the instances, open-loop publishing at rising rates."""

from __future__ import annotations

from typing import Any

from config import Config
from drivers import Subscribers
from systems import deploy

from workloads.fanout import fanout_step

SYSTEMS = ("relay", "node", "pysio", "bare")


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """One step per rate until a step fails (p99 over the limit, loss, or falling behind)."""
    steps: list[dict[str, Any]] = []
    async with deploy(system, cfg, "W2") as dep:
        subs = await Subscribers.start(
            dep,
            cfg,
            count=cfg.w2_subscribers,
            urls=dep.subscribe_urls(),
            stalled=0,
            name=f"W2-{system}-subs",
        )
        try:
            for run_id, rate in enumerate(cfg.w2_rates):
                step = await fanout_step(
                    dep, subs, cfg, rate=rate, seconds=cfg.w2_seconds, run=run_id
                )
                steps.append(step)
                if not step["ok"]:
                    break
        finally:
            await subs.stop()
    passed = [step["rate"] for step in steps if step["ok"]]
    return {
        "subscribers": cfg.w2_subscribers,
        "connect": subs.ready,
        "steps": steps,
        "max_ok_rate": max(passed, default=0),
    }
