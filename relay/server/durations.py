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

Keys are workflow types, and (type, step) pairs for the steps of sessions
that declared a plan: a step's duration runs from the session's first event
of that step to its first event of the next one, or to its completion for
the last. Steps share the bounds with types.
"""

from __future__ import annotations

import math
import statistics
from collections import OrderedDict, deque
from collections.abc import Iterable

SAMPLES_PER_KEY = 50
"""Durations kept per key: the typical duration follows the latest this many sessions."""

MAX_KEYS = 1_000
"""Keys (types and steps of types) remembered at most."""

DurationKey = str | tuple[str, str]
"""A workflow type, or a (workflow type, step) pair."""


class Durations:
    """The latest durations of completed sessions per key, and their median."""

    def __init__(self, *, samples: int = SAMPLES_PER_KEY, max_keys: int = MAX_KEYS) -> None:
        self._samples = samples
        self._max_keys = max_keys
        # Ordered by latest completion, oldest first, so eviction pops from the front.
        self._durations: OrderedDict[DurationKey, deque[int]] = OrderedDict()
        # Medians computed since the key's last completion: listings ask for many at once.
        self._typical: dict[DurationKey, float] = {}

    def __len__(self) -> int:
        return len(self._durations)

    def record(self, key: DurationKey, duration_ms: int) -> None:
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

    def typical(self, key: DurationKey) -> float | None:
        """Seconds a session of ``key`` typically takes (whole milliseconds); None when unknown."""
        known = self._typical.get(key)
        if known is not None:
            return known
        kept = self._durations.get(key)
        if not kept:
            return None
        known = self._typical[key] = math.floor(statistics.median(kept) + 0.5) / 1000
        return known

    def typical_steps(self, workflow_type: str, steps: Iterable[str]) -> list[float | None]:
        """The typical seconds of each of ``steps`` in sessions of ``workflow_type``."""
        return [self.typical((workflow_type, step)) for step in steps]

    def forget(self, workflow_type: str) -> None:
        """Forget what sessions of ``workflow_type`` and their steps took (before a rebuild)."""
        doomed = [
            key
            for key in self._durations
            if key == workflow_type or (isinstance(key, tuple) and key[0] == workflow_type)
        ]
        for key in doomed:
            del self._durations[key]
            self._typical.pop(key, None)
