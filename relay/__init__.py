"""relay: a real-time progress relay for long-running workflows.

Workers publish progress events into one Redis stream per workflow type; any
number of gateways read those streams and push the events to WebSocket
subscribers.
"""

from relay.gateway import build_relay, create_app
from relay.hub import Hub
from relay.keys import Keys, event_name
from relay.models import TERMINAL_STATUSES, EntryError, ProgressEvent, Status
from relay.reporter import AsyncReporter, HttpReporter, Reporter
from relay.retry import ReportError, RetryPolicy
from relay.sessions import SessionState, SessionView
from relay.settings import Settings
from relay.streams import Receipt, StreamStore
from relay.worker_session import AsyncReportingSession, CancelRequested, ReportingSession

__all__ = [
    "TERMINAL_STATUSES",
    "AsyncReporter",
    "AsyncReportingSession",
    "CancelRequested",
    "EntryError",
    "HttpReporter",
    "Hub",
    "Keys",
    "ProgressEvent",
    "Receipt",
    "ReportError",
    "Reporter",
    "ReportingSession",
    "RetryPolicy",
    "SessionState",
    "SessionView",
    "Settings",
    "Status",
    "StreamStore",
    "build_relay",
    "create_app",
    "event_name",
]
