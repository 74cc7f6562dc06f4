"""Peer system: python-socketio on aiohttp with AsyncRedisManager.

``POST /api/workflows/progress`` emits the body to every client of every
instance as ``workflow:progress:<type>``; the manager relays it through Redis.
"""

from __future__ import annotations

import argparse
import json

import socketio
import uvloop
from aiohttp import web


def build_app(redis_url: str) -> web.Application:
    """The aiohttp app with the Socket.IO server attached."""
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=socketio.AsyncRedisManager(redis_url)
    )
    app = web.Application()
    sio.attach(app)

    async def publish(request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": "malformed JSON"}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("workflow_type"), str):
            return web.json_response({"error": "workflow_type is required"}, status=422)
        event = f"workflow:progress:{body['workflow_type']}"
        await sio.emit(event, body)
        return web.json_response({"event": event}, status=202)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_post("/api/workflows/progress", publish)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    """Serve on 127.0.0.1 until SIGTERM, with uvloop like the relay gateway."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", required=True)
    args = parser.parse_args()
    web.run_app(
        build_app(args.redis_url),
        host="127.0.0.1",
        port=args.port,
        print=None,
        access_log=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
