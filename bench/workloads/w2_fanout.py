"""W2 fan-out: subscribers spread over the instances, open-loop publishing at rising rates.

Each rate runs on a fresh deployment, so a backlog left by an overloaded step
cannot spill into the next. Rates rise until a step fails (p99 over the limit,
loss, duplicates, or the publisher falling behind); when even the first fails,
lower rates are tried so the highest passing rate is still found.
"""

from __future__ import annotations

from typing import Any

from config import Config
from drivers import Subscribers
from systems import deploy

from workloads.fanout import fanout_step

SYSTEMS = ("relay", "relay-sio", "node", "pysio", "bare")


async def measure(system: str, cfg: Config, rate: int, run: int) -> dict[str, Any]:
    """One step at ``rate`` on a fresh deployment with fresh subscribers."""
    async with deploy(system, cfg, f"W2-{rate}") as dep:
        subs = await Subscribers.start(
            dep,
            cfg,
            count=cfg.w2_subscribers,
            urls=dep.subscribe_urls(),
            stalled=0,
            name=f"W2-{rate}-{system}-subs",
        )
        try:
            step = await fanout_step(dep, subs, cfg, rate=rate, seconds=cfg.w2_seconds, run=run)
        finally:
            await subs.stop()
    return {**step, "connect_ms": subs.ready["ms"], "connect_failed": subs.ready["failed"]}


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """Steps up from the base rate until one fails; down from it if the first fails."""
    steps: list[dict[str, Any]] = []
    for rate in cfg.w2_rates:
        steps.append(await measure(system, cfg, rate, len(steps)))
        if not steps[-1]["ok"]:
            break
    if not steps[0]["ok"]:
        for rate in cfg.w2_fallback_rates:
            steps.append(await measure(system, cfg, rate, len(steps)))
            if steps[-1]["ok"]:
                break
    passed = [step["rate"] for step in steps if step["ok"]]
    return {
        "subscribers": cfg.w2_subscribers,
        "steps": steps,
        "max_ok_rate": max(passed, default=0),
    }
