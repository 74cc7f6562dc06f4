"""W2 fan-out: subscribers spread over the instances, open-loop publishing at rising rates.

Each rate runs on a fresh deployment, so a backlog left by an overloaded step
cannot spill into the next. Rates rise until a step fails (p99 over the limit,
loss, duplicates, or the publisher falling behind); when even the first fails,
lower rates are tried so the highest passing rate is still found. The ladder
runs with 200 subscribers for every system, then for some with 1,000 (``big``).
"""

from __future__ import annotations

from typing import Any

from config import Config
from drivers import Subscribers
from systems import deploy

from workloads.fanout import fanout_step

SYSTEMS = ("relay", "relay-sio", "relay-workers", "node", "pysio", "bare")
# Systems that also climb the ladder with 1,000 subscribers.
BIG_SYSTEMS = ("relay", "relay-sio", "relay-workers", "node")


async def measure(
    system: str, cfg: Config, rate: int, run: int, subscribers: int
) -> dict[str, Any]:
    """One step at ``rate`` on a fresh deployment with fresh subscribers."""
    tag = f"W2-{subscribers}-{rate}"
    async with deploy(system, cfg, tag) as dep:
        subs = await Subscribers.start(
            dep,
            cfg,
            count=subscribers,
            urls=dep.subscribe_urls(),
            stalled=0,
            name=f"{tag}-{system}-subs",
        )
        try:
            step = await fanout_step(dep, subs, cfg, rate=rate, seconds=cfg.w2_seconds, run=run)
        finally:
            await subs.stop()
    return {**step, "connect_ms": subs.ready["ms"], "connect_failed": subs.ready["failed"]}


async def ladder(
    system: str,
    cfg: Config,
    subscribers: int,
    rates: tuple[int, ...],
    fallback_rates: tuple[int, ...],
) -> dict[str, Any]:
    """Steps up from the first rate until one fails; down from it if the first fails."""
    steps: list[dict[str, Any]] = []
    for rate in rates:
        steps.append(await measure(system, cfg, rate, len(steps), subscribers))
        if not steps[-1]["ok"]:
            break
    if not steps[0]["ok"]:
        for rate in fallback_rates:
            steps.append(await measure(system, cfg, rate, len(steps), subscribers))
            if steps[-1]["ok"]:
                break
    passed = [step["rate"] for step in steps if step["ok"]]
    return {
        "subscribers": subscribers,
        "steps": steps,
        "max_ok_rate": max(passed, default=0),
    }


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """The ladder with 200 subscribers; for :data:`BIG_SYSTEMS` with 1,000 too."""
    result = await ladder(system, cfg, cfg.w2_subscribers, cfg.w2_rates, cfg.w2_fallback_rates)
    if system in BIG_SYSTEMS:
        result["big"] = await ladder(
            system, cfg, cfg.w2_big_subscribers, cfg.w2_big_rates, cfg.w2_big_fallback_rates
        )
    return result
