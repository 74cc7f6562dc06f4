"""How long sessions of each workflow type typically take, learned from the streams.

The session view tells this store of every session it sees complete (the
completion's ``ts`` minus the session's ``started_at``; a completion the
gateway inferred counts like a reported one, failed and cancelled sessions do
not). Since the view is rebuilt from the retained stream tail when a gateway
starts, so is this store, and every gateway that read the same entries gives
the same typical duration. The typical duration of a key is the median of its
latest :data:`SAMPLES_PER_KEY` durations: one session that hung for an hour
moves it no more than one that took a second. Memory stays bounded: at most
:data:`MAX_KEYS` keys, the ones that completed a session least recently
forgotten first.

Keys are workflow types today; a key per step of a type can be added beside
them, since the store knows nothing of what a key means.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque

SAMPLES_PER_KEY = 50
"""Durations kept per key: the typical duration follows the latest this many sessions."""

MAX_KEYS = 1_000
"""Keys remembered at most."""


class Durations:
    """The latest durations of completed sessions per key, and their median."""

    def __init__(self, *, samples: int = SAMPLES_PER_KEY, max_keys: int = MAX_KEYS) -> None:
        self._samples = samples
        self._max_keys = max_keys
        # Ordered by latest completion, oldest first, so eviction pops from the front.
        self._durations: OrderedDict[str, deque[int]] = OrderedDict()
        # Medians computed since the key's last completion: listings ask for many at once.
        self._typical: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._durations)

    def record(self, key: str, duration_ms: int) -> None:
        """Remember that a session of ``key`` completed after ``duration_ms``.

        A duration that is not positive (a session seen only at its end)
        says nothing of how long sessions take and is left out.
        """
        if duration_ms <= 0:
            return
        kept = self._durations.get(key)
        if kept is None:
            kept = self._durations[key] = deque(maxlen=self._samples)
        else:
            self._durations.move_to_end(key)
        kept.append(duration_ms)
        self._typical.pop(key, None)
        while len(self._durations) > self._max_keys:
            evicted, _ = self._durations.popitem(last=False)
            self._typical.pop(evicted, None)

    def typical(self, key: str) -> float | None:
        """Seconds a session of ``key`` typically takes (whole milliseconds); None when unknown."""
        known = self._typical.get(key)
        if known is not None:
            return known
        kept = self._durations.get(key)
        if not kept:
            return None
        known = self._typical[key] = math.floor(statistics.median(kept) + 0.5) / 1000
        return known

    def forget(self, key: str) -> None:
        """Forget what ``key``'s sessions took (before rebuilding it from its stream)."""
        self._durations.pop(key, None)
        self._typical.pop(key, None)
