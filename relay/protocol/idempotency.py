"""Idempotent publishing: a key names one publication, so that a retry of it writes nothing twice.

A publisher that cannot tell whether its publish was written (a timeout, a
lost answer, a 503 from a gateway whose Redis was stalled) sends the same
events again under the same key. The publish script looks the key up and
records it in the same call that writes the entries, so of any number of
tries, concurrent or not, exactly one writes; the others answer its ids. The
record lives for a window of :data:`DEFAULT_IDEMPOTENCY_TTL` seconds unless
configured otherwise.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from relay.protocol.event import ProgressEvent

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Set on an answer given from the record of an earlier publish rather than a new write.
REPLAYED_HEADER = "Idempotent-Replayed"
# A day covers every retry policy we know of, and a record costs about 100 bytes.
DEFAULT_IDEMPOTENCY_TTL = 86_400
MAX_KEY_CHARS = 255
REUSED = "idempotency_key_reused"


class KeyReused(Exception):
    """The key was already used, within the window, for different events."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used for different events")
        self.key = key


def check_key(key: str) -> str:
    """``key`` if it is 1 to 255 printable ASCII characters; ValueError saying why not."""
    if not key:
        raise ValueError("must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise ValueError(f"is {len(key)} characters, more than {MAX_KEY_CHARS}")
    if not all(" " <= char <= "~" for char in key):
        raise ValueError("must be printable ASCII")
    return key


def new_key() -> str:
    """A fresh key for one publication (what the reporters send)."""
    return uuid.uuid4().hex


def fingerprint(events: Sequence[ProgressEvent]) -> str:
    """What identifies a publication's content: its events without their ``ts``.

    A retry may be stamped anew; it is still the same publication.
    """
    content = [_content(event) for event in events]
    digest = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()[:32]


def _content(event: ProgressEvent) -> dict[str, Any]:
    """Every field of ``event`` but ``ts``, as ``model_dump(mode="json")`` gives them.

    The fields are validated JSON values already (the metadata is checked to
    encode), so they are taken as they are, which is several times cheaper
    than dumping the model; only the plan's steps are models of their own.
    """
    content = dict(event.__dict__)
    del content["ts"]
    if event.plan is not None:
        content["plan"] = [{"step": s.step, "weight": float(s.weight)} for s in event.plan]
    return content
