"""The dashboard page and the browser client, served from the package."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")
# The browser client's one source is the npm package (clients/js); the static
# directory links to it, so a wheel carries the file and the gateway serves it.
CLIENT = STATIC_DIR / "relay-client.js"

routes = web.RouteTableDef()


@routes.get("/")
async def dashboard(request: web.Request) -> web.FileResponse:
    """The live dashboard."""
    return web.FileResponse(STATIC_DIR / "index.html")


# Before the static route, which refuses a link leading out of its directory.
@routes.get("/static/relay-client.js")
async def browser_client(request: web.Request) -> web.FileResponse:
    """The browser client, an ES module."""
    # Named here rather than guessed from the suffix, whose type varies by platform.
    return web.FileResponse(CLIENT, headers={"Content-Type": "text/javascript"})


routes.static("/static", STATIC_DIR)
