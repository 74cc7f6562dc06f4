"""Log output of the ``relay`` command: plain text lines, or one JSON object per line.

``RELAY_LOG_FORMAT=json`` (or ``relay serve --log-format json``) turns on
:class:`JsonFormatter`, for log collectors that parse each line. Either way a
record carries only what the code logged: nothing logs event payloads.
:class:`SecretScrubber` blanks tokens, bearer credentials and the passwords
of URLs out of every record, whichever library wrote it.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from relay.client.redis_urls import REDACTED, redacted

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WORKER_TEXT_FORMAT = "%(asctime)s %(levelname)s worker %(worker)d %(name)s: %(message)s"

# ``token=`` in a query string (also ``access_token=``), a bearer credential
# in a header, and a ``"token": "..."`` member of a logged frame.
_SECRETS = (
    (re.compile(r"(token=)[^&\s\"'<>#;,]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"(bearer\s+)[^\s\"',;]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    (re.compile(r"(\"token\"\s*:\s*\")[^\"]*", re.IGNORECASE), rf"\g<1>{REDACTED}"),
)


def scrub(text: str) -> str:
    """``text`` with every token, bearer credential and URL password replaced by ``[redacted]``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return redacted(text)


class SecretScrubber(logging.Filter):
    """Rewrites each record so that no token or bearer credential reaches the output.

    The message is formatted with its arguments first and then scrubbed, so a
    secret passed as an argument is caught too; a traceback is formatted and
    scrubbed here as well (formatters reuse ``exc_text``), and so is a stack.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Scrub ``record`` in place; never drops it."""
        record.msg, record.args = scrub(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class WorkerNumber(logging.Filter):
    """Stamps each record with the number of the worker process (``relay serve --workers``)."""

    def __init__(self, number: int) -> None:
        super().__init__()
        self.number = number

    def filter(self, record: logging.LogRecord) -> bool:
        """Set ``record.worker``; never drops it."""
        record.worker = self.number
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``.

    ``worker`` is the worker's number when the gateway runs several.
    ``exception`` holds the formatted traceback when the record has one, and
    ``stack`` the stack when it was asked for. ``ts`` is ISO 8601 in UTC with
    milliseconds.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        worker = getattr(record, "worker", None)
        if worker is not None:
            entry["worker"] = worker
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(
    level: str,
    log_format: str = "text",
    stream: TextIO | None = None,
    *,
    worker: int | None = None,
) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr), as text or JSON.

    With ``worker``, every line names that worker process.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    text_format = TEXT_FORMAT if worker is None else WORKER_TEXT_FORMAT
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(text_format)
    handler.setFormatter(formatter)
    handler.addFilter(SecretScrubber())
    if worker is not None:
        handler.addFilter(WorkerNumber(worker))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
