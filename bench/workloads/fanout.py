"""One fan-out measurement shared by W2 and W5: publish open-loop, count every receipt."""

from __future__ import annotations

import asyncio
from typing import Any

from config import P99_LIMIT_MS, Config
from drivers import Subscribers, publish_open_loop
from meters import CpuMeter, RssPeak
from systems import Deployment

ON_SCHEDULE = 0.95


async def fanout_step(
    dep: Deployment,
    subs: Subscribers,
    cfg: Config,
    *,
    rate: int,
    seconds: float,
    run: int,
    stall: bool = False,
) -> dict[str, Any]:
    """Publish ``rate`` events/s for ``seconds`` to instance A; figures of what subscribers got.

    With ``stall`` the stalled subscribers stop reading for the publish schedule
    and read again when it ends; their figures are reported apart from the healthy ones.
    """
    events = round(rate * seconds)
    loadgen_cpu_start = await subs.begin(run, events)
    if stall:
        await subs.pause()
    meter = CpuMeter(dep.servers)
    with RssPeak(proc for proc in dep.servers if proc is not dep.redis_proc) as rss:
        publisher = asyncio.create_task(
            publish_open_loop(dep.publish_url(), rate, seconds, run, cfg, f"{dep.system}-pub-{run}")
        )
        try:
            if stall:
                # Read again when the schedule ends, not when the last answer came back.
                await asyncio.sleep(seconds)
                await subs.resume()
            published = await publisher
        finally:
            if not publisher.done():
                publisher.cancel()
                await asyncio.wait([publisher])
    stats = await subs.collect(cfg.drain_seconds, published["rejected"])
    cpu = meter.read()
    healthy, stalled, latency = stats["healthy"], stats["stalled"], stats["latency"]
    deliveries = healthy["received"] + stalled["received"]
    loadgen_cpu = stats["cpuMs"] - loadgen_cpu_start + published["cpuMs"]
    server_cpu = cpu.per_thousand(deliveries)
    p99 = latency["p99"]
    ok = (
        healthy["lost"] == 0
        and healthy["dups"] == 0
        and p99 is not None
        and p99 < P99_LIMIT_MS
        and published["sendRate"] >= ON_SCHEDULE * rate
        and published["failed"] + published["errors"] == 0
    )
    return {
        "rate": rate,
        "seconds": seconds,
        "events": events,
        "sessions": stats["sessions"],
        "achieved_rate": round(published["sendRate"], 1),
        "publish": {
            k: published[k] for k in ("sent", "ok", "failed", "errors", "deferred", "firstError")
        },
        "rejected": len(published["rejected"]),
        "publish_lag_ms": published["lagMs"],
        "publish_answer_ms": published["answerMs"],
        "deliveries": deliveries,
        "deliveries_per_s": round(deliveries / seconds, 1),
        "loss": healthy["lost"],
        "dups": healthy["dups"] + stalled["dups"],
        "closed": healthy["closed"],
        "latency_ms": latency,
        "stray": stats["stray"],
        "stalled": stalled,
        "server_cpu_ms_per_1k": server_cpu,
        "loadgen_cpu_ms_per_1k": loadgen_cpu * 1000 / deliveries if deliveries else None,
        "unattributed_cpu_ms": round(cpu.unattributed_ms(loadgen_cpu), 1),
        "rss_growth_mib": round(rss.growth_mib, 1),
        "ok": ok,
        **cpu.as_dict(),
    }
