"""relay: a real-time progress relay for long-running workflows.

Workers publish progress events into one Redis stream per workflow type; any
number of gateways read those streams and push the events to WebSocket
subscribers.
"""

from relay.gateway import build_relay, create_app
from relay.hub import Hub
from relay.keys import Keys, event_name
from relay.models import TERMINAL_STATUSES, EntryError, ProgressEvent, Status
from relay.reporter import AsyncReporter, HttpReporter, Reporter, ReportError
from relay.settings import Settings
from relay.streams import StreamStore

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncReporter",
    "EntryError",
    "HttpReporter",
    "Hub",
    "Keys",
    "ProgressEvent",
    "ReportError",
    "Reporter",
    "Settings",
    "Status",
    "StreamStore",
    "build_relay",
    "create_app",
    "event_name",
]
