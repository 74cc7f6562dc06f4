"""Gateway memory while many clients resume at once.

Starts its own redis-server and relay gateways (see systems.deploy), publishes
``--entries`` + 1 events, then connects ``--clients`` WebSocket clients to
gateway A at once, each resuming from the first event (so each replays
``--entries`` events), and prints gateway A's RSS before, at its peak while
the replays ran, and after every client had its history::

    python bench/replay_memory.py
    python bench/replay_memory.py --max-replays 64   # the highest bound allowed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from config import WORKFLOW_TYPE, Config
from meters import RssPeak
from procs import raise_nofile_limit
from systems import Deployment, deploy

BATCH = 1_000
SESSIONS = 50
SAMPLE_SECONDS = 0.02
REPLAY_TIMEOUT = 300.0


async def publish(dep: Deployment, count: int) -> list[str]:
    """``count`` events over the batch endpoint; their ids once gateway A has read them all."""
    ids: list[str] = []
    base = dep.instances[0].base_url
    async with aiohttp.ClientSession() as http:
        for start in range(0, count, BATCH):
            events = [
                {
                    "session_id": f"resume-{n % SESSIONS}",
                    "workflow_type": WORKFLOW_TYPE,
                    "step": "working",
                    "progress": n % 100,
                    "metadata": {"seq": n},
                }
                for n in range(start, min(start + BATCH, count))
            ]
            async with http.post(dep.publish_url() + "/batch", json=events) as answer:
                answer.raise_for_status()
                ids += (await answer.json())["ids"]
        last_session = f"resume-{(count - 1) % SESSIONS}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            async with http.get(f"{base}/api/workflows/sessions/{last_session}") as answer:
                if answer.status == 200 and (await answer.json())["last_event_id"] == ids[-1]:
                    return ids
            await asyncio.sleep(0.05)
    raise RuntimeError("gateway A did not read the published events in time")


async def resume(http: aiohttp.ClientSession, url: str, since: str, expected: int) -> int:
    """One client resuming from ``since``: the events it got, up to all of them or an error."""
    got = 0
    async with http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_json({"action": "subscribe", "workflow_type": WORKFLOW_TYPE, "since": since})
        while got < expected:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.TEXT:
                return got
            decoded = json.loads(message.data)
            frames = decoded if isinstance(decoded, list) else [decoded]
            got += sum(1 for frame in frames if "event" in frame)
            if any(frame.get("type") == "error" for frame in frames):
                return got  # the replay failed: this client will not get its history
    return got


async def measure(clients: int, entries: int, max_replays: int | None) -> dict[str, Any]:
    if max_replays is not None:
        os.environ["RELAY_MAX_CONCURRENT_REPLAYS"] = str(max_replays)
    os.environ["RELAY_REPLAY_LIMIT"] = str(max(entries, 1_000))
    cfg = Config.make(quick=True, log_dir=Path(tempfile.mkdtemp(prefix="replay-memory-")))
    async with deploy("relay", cfg, "replay") as dep:
        ids = await publish(dep, entries + 1)
        gateway = dep.instances[0].proc
        await asyncio.sleep(1.0)  # let the gateway settle after the publish
        started = time.monotonic()
        connector = aiohttp.TCPConnector(limit=0)
        with RssPeak([gateway], interval=SAMPLE_SECONDS) as rss:
            async with aiohttp.ClientSession(connector=connector) as http:
                url = dep.subscribe_url(0)
                counts = await asyncio.wait_for(
                    asyncio.gather(*(resume(http, url, ids[0], entries) for _ in range(clients))),
                    REPLAY_TIMEOUT,
                )
            elapsed = time.monotonic() - started
            after = gateway.rss_kib()
    return {
        "clients": clients,
        "entries_each": entries,
        "max_concurrent_replays": max_replays or "default",
        "clients_with_full_history": sum(count >= entries for count in counts),
        "seconds": round(elapsed, 2),
        "rss_before_mib": round(rss.start_kib / 1024, 1),
        "rss_peak_mib": round(rss.peak_kib / 1024, 1),
        "rss_after_mib": round(after / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--entries", type=int, default=1_000)
    parser.add_argument(
        "--max-replays", type=int, default=None, help="RELAY_MAX_CONCURRENT_REPLAYS for the run"
    )
    args = parser.parse_args()
    raise_nofile_limit()
    result = asyncio.run(measure(args.clients, args.entries, args.max_replays))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
