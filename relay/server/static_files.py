"""The dashboard page and the browser client, served from the package."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).with_name("static")

routes = web.RouteTableDef()


@routes.get("/")
async def dashboard(request: web.Request) -> web.FileResponse:
    """The live dashboard."""
    return web.FileResponse(STATIC_DIR / "index.html")


routes.static("/static", STATIC_DIR)
