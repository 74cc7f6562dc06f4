"""Prebuilt WebSocket frames written straight to a connection's transport.

aiohttp frames every ``send_str`` itself: it encodes the text, builds a header
and writes, once per subscriber. A server's frames are not masked, so an
event's frame is the same bytes for every connection; :class:`FrameSink` writes
those bytes (see :attr:`relay.protocol.frames.Envelope.websocket_frame`) to the
transport under the WebSocket, for the subscriber's direct path
(:class:`relay.server.subscriber.DirectWrite`). It says it is writable only
while a write cannot wait: the socket open and the transport below its
high-water mark (aiohttp's protocol not paused). Anything else, the queued
writer and its flow control take over.

A backlog goes out as the writer sends it, in JSON arrays of up to
:data:`~relay.server.subscriber.MAX_BATCH` frames, so a client gets one
message for it. Every connection routed the same events in one batch has
the same backlog: the last one framed is kept, and the next connection with
the same items gets the same bytes.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol

from relay.protocol.frames import Envelope, websocket_text_frame
from relay.server.subscriber import MAX_BATCH, websocket_batch, websocket_text


class LastBacklog:
    """The backlog framed last and its bytes, for the next connection handed the same items."""

    __slots__ = ("data", "items")

    def __init__(self) -> None:
        self.items: list[Envelope | str] = []
        self.data = b""


def backlog_frames(items: list[Envelope | str], last: LastBacklog) -> bytes:
    """Several items as frames of JSON arrays, as the queued writer would send them.

    ``last`` is the backlog framed before: the same items (the same events,
    equal control frames) are the same bytes.
    """
    if items == last.items:
        return last.data
    data = b"".join(
        [
            websocket_text_frame(
                websocket_batch(
                    [websocket_text(item) for item in items[start : start + MAX_BATCH]]
                ).encode()
            )
            for start in range(0, len(items), MAX_BATCH)
        ]
    )
    last.items, last.data = items, data
    return data


# One event loop serves every connection of a gateway: the backlogs of one batch follow each other.
_LAST_BACKLOG = LastBacklog()


class FrameSink:
    """One WebSocket's transport, for frames built beforehand."""

    __slots__ = ("_protocol", "_transport", "_ws")

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, protocol: BaseProtocol
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._protocol = protocol

    @classmethod
    def of(cls, request: web.Request, ws: web.WebSocketResponse) -> FrameSink | None:
        """The sink of a prepared WebSocket; None if its frames are not plain bytes.

        A compressed connection (permessage-deflate) frames each message with
        its own compressor state, so only aiohttp may write to it.
        """
        transport, protocol = request.transport, request.protocol
        if ws.compress or transport is None:
            return None
        return cls(ws, transport, protocol)

    def writable(self) -> bool:
        """Open, and below the transport's high-water mark: a write now cannot wait."""
        return not (
            self._ws.closed or self._transport.is_closing() or self._protocol.writing_paused
        )

    @staticmethod
    def encode(items: list[Envelope | str]) -> bytes:
        """One item as its frame (an event's is shared); several as :func:`backlog_frames`."""
        if len(items) > 1:
            return backlog_frames(items, _LAST_BACKLOG)
        item = items[0]
        if isinstance(item, Envelope):
            return item.websocket_frame
        return websocket_text_frame(item.encode())

    def write(self, data: bytes) -> None:
        """Write whole frames; ``writable()`` said this cannot wait."""
        self._transport.write(data)
