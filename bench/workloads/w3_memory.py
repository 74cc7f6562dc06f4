"""W3 idle memory: RSS per idle subscriber on instance A, and 10,000 on one relay gateway."""

from __future__ import annotations

import asyncio
from typing import Any

from config import Config
from drivers import Subscribers, event_body, post_event
from systems import Deployment, deploy

SYSTEMS = ("relay", "relay-sio", "relay-sio-poll", "node", "pysio", "bare")
# Systems that also hold 10,000 idle subscribers on one gateway: relay, on /ws and on /socket.io/.
BIG_SYSTEMS = ("relay", "relay-sio")
SETTLE_SECONDS = 2.0
BROADCAST_DRAIN_SECONDS = 15.0


async def idle_rss(dep: Deployment, cfg: Config, count: int, *, broadcast: bool) -> dict[str, Any]:
    """Connect ``count`` idle subscribers to A; RSS KiB per connection.

    With ``broadcast`` one event is then published and every subscriber must get it.
    """
    gateway = dep.instances[0].proc
    await asyncio.sleep(SETTLE_SECONDS)
    before = gateway.rss_kib()
    subs = await Subscribers.start(
        dep, cfg, count=count, urls=[dep.subscribe_url(0)], stalled=0, name=f"W3-{count}-subs"
    )
    try:
        await asyncio.sleep(SETTLE_SECONDS)
        after = gateway.rss_kib()
        result: dict[str, Any] = {
            "subscribers": count,
            "connected": subs.ready["connected"],
            "failed": subs.ready["failed"],
            "connect_ms": subs.ready["ms"],
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_conn": round((after - before) / count, 2),
        }
        if broadcast:
            await subs.begin(run=0, events=1, sessions=1)
            status = await post_event(dep.publish_url(), event_body(run=0, seq=0, session=0))
            stats = await subs.collect(BROADCAST_DRAIN_SECONDS, rejected=[])
            result["broadcast"] = {
                "status": status,
                "received": stats["healthy"]["received"],
                "lost": stats["healthy"]["lost"],
                "latency_ms": stats["latency"],
            }
            result["ok"] = (
                result["connected"] == count and status == 202 and stats["healthy"]["lost"] == 0
            )
    finally:
        await subs.stop()
    return result


async def run(system: str, cfg: Config) -> dict[str, Any]:
    """2,000 idle subscribers for every system; 10,000 on one relay gateway too."""
    async with deploy(system, cfg, "W3") as dep:
        result = {"idle": await idle_rss(dep, cfg, cfg.w3_idle, broadcast=False)}
    if system in BIG_SYSTEMS:
        async with deploy(system, cfg, "W3big") as dep:
            result["big"] = await idle_rss(dep, cfg, cfg.w3_big, broadcast=True)
    return result
