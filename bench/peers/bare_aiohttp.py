"""Peer system: bare aiohttp, one process and no Redis; the floor for a Python gateway.

``POST /api/workflows/progress`` encodes one frame ``{"event", "data"}`` and
writes it to every connected WebSocket (``GET /ws``).
"""

from __future__ import annotations

import argparse
import contextlib

import orjson
import uvloop
from aiohttp import web

CLIENTS = web.AppKey("clients", set[web.WebSocketResponse])


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """Hold the connection open; whatever the client sends is ignored."""
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    clients = request.app[CLIENTS]
    clients.add(ws)
    try:
        async for _ in ws:
            pass
    finally:
        clients.discard(ws)
    return ws


async def publish(request: web.Request) -> web.Response:
    """Validate the JSON body just enough, then send one frame to every client."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return web.json_response({"error": "malformed JSON"}, status=400)
    if not isinstance(body, dict) or not isinstance(body.get("workflow_type"), str):
        return web.json_response({"error": "workflow_type is required"}, status=422)
    event = f"workflow:progress:{body['workflow_type']}"
    frame = orjson.dumps({"event": event, "data": body}).decode()
    for ws in list(request.app[CLIENTS]):
        with contextlib.suppress(ConnectionError, RuntimeError):
            await ws.send_str(frame)
    return web.json_response({"event": event}, status=202)


async def healthz(request: web.Request) -> web.Response:
    """Always ready."""
    return web.json_response({"status": "ok"})


def main() -> None:
    """Serve on 127.0.0.1 until SIGTERM, with uvloop like the relay gateway."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app[CLIENTS] = set()
    app.router.add_post("/api/workflows/progress", publish)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/healthz", healthz)
    web.run_app(
        app,
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
