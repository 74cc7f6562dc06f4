"""W5 slow consumers: W2 at 500 ev/s with a tenth of the subscribers not reading."""

from __future__ import annotations

from typing import Any

from config import Config
from drivers import Subscribers
from systems import deploy

from workloads.fanout import fanout_step

SYSTEMS = ("relay", "relay-sio", "node", "pysio", "bare")
RATE = 500


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """Healthy subscribers' latency and loss, RSS growth, and what the stalled ones got."""
    stalled = round(cfg.w2_subscribers * cfg.w5_stalled_share)
    async with deploy(system, cfg, "W5") as dep:
        subs = await Subscribers.start(
            dep,
            cfg,
            count=cfg.w2_subscribers,
            urls=dep.subscribe_urls(),
            stalled=stalled,
            name=f"W5-{system}-subs",
        )
        try:
            step = await fanout_step(
                dep, subs, cfg, rate=RATE, seconds=cfg.w5_seconds, run=0, stall=True
            )
        finally:
            await subs.stop()
    return {"subscribers": cfg.w2_subscribers, "stalled_subscribers": stalled, **step}
