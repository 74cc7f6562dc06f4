"""Addresses and why one could not be had, as the command's one-line errors tell them."""

from __future__ import annotations

import os
import socket


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def os_reason(exc: OSError) -> str:
    """Why a bind failed, in the system's words without the bind's own wording around them."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        text = str(exc.strerror or exc)
    else:
        text = os.strerror(exc.errno)
    return text[:1].lower() + text[1:]


def cannot_listen(host: str, port: int, exc: OSError) -> str:
    """The line ``relay serve`` prints when it cannot listen on ``host`` and ``port``."""
    return f"relay serve: cannot listen on {host_port(host, port)}: {os_reason(exc)}"
