"""relay: a real-time progress relay for long-running workflows.

Workers publish progress events into one Redis stream per workflow type; any
number of gateways read those streams and push the events to WebSocket and
SSE subscribers.

The names below are imported on first use, so a worker's ``import relay``
loads the reporters it uses and never the gateway; ``relay.watch``, the
Python subscriber, needs aiohttp (the ``server`` extra).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# Each public name and the module that defines it.
_EXPORTS = {
    "AsyncReporter": "relay.client.reporters",
    "HttpReporter": "relay.client.reporters",
    "Reporter": "relay.client.reporters",
    "AsyncReportingSession": "relay.client.reporting_session",
    "CancelRequested": "relay.client.reporting_session",
    "ReportingSession": "relay.client.reporting_session",
    "ReportError": "relay.client.retry",
    "RetryPolicy": "relay.client.retry",
    "TokenRefused": "relay.client.subscriber",
    "Update": "relay.client.subscriber",
    "watch": "relay.client.subscriber",
    "EntryError": "relay.protocol.entries",
    "Receipt": "relay.protocol.entries",
    "TERMINAL_STATUSES": "relay.protocol.event",
    "ProgressEvent": "relay.protocol.event",
    "Status": "relay.protocol.event",
    "Keys": "relay.protocol.keys",
    "event_name": "relay.protocol.keys",
    "build_relay": "relay.server.app",
    "create_app": "relay.server.app",
    "Hub": "relay.server.hub",
    "SessionState": "relay.server.session_state",
    "SessionView": "relay.server.session_view",
    "Settings": "relay.server.settings",
    "StreamStore": "relay.server.stream_store",
}

__all__ = ["__version__", *sorted(_EXPORTS)]

if TYPE_CHECKING:
    from relay.client.reporters import AsyncReporter as AsyncReporter
    from relay.client.reporters import HttpReporter as HttpReporter
    from relay.client.reporters import Reporter as Reporter
    from relay.client.reporting_session import AsyncReportingSession as AsyncReportingSession
    from relay.client.reporting_session import CancelRequested as CancelRequested
    from relay.client.reporting_session import ReportingSession as ReportingSession
    from relay.client.retry import ReportError as ReportError
    from relay.client.retry import RetryPolicy as RetryPolicy
    from relay.client.subscriber import TokenRefused as TokenRefused
    from relay.client.subscriber import Update as Update
    from relay.client.subscriber import watch as watch
    from relay.protocol.entries import EntryError as EntryError
    from relay.protocol.entries import Receipt as Receipt
    from relay.protocol.event import TERMINAL_STATUSES as TERMINAL_STATUSES
    from relay.protocol.event import ProgressEvent as ProgressEvent
    from relay.protocol.event import Status as Status
    from relay.protocol.keys import Keys as Keys
    from relay.protocol.keys import event_name as event_name
    from relay.server.app import build_relay as build_relay
    from relay.server.app import create_app as create_app
    from relay.server.hub import Hub as Hub
    from relay.server.session_state import SessionState as SessionState
    from relay.server.session_view import SessionView as SessionView
    from relay.server.settings import Settings as Settings
    from relay.server.stream_store import StreamStore as StreamStore


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is asked for."""
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'relay' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
