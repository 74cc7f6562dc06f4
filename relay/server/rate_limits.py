"""Rate limits: token buckets for client frames and for publishers."""

from __future__ import annotations

import time


class TokenBucket:
    """Allows ``rate`` units a second on average and ``burst`` at once; 0 rate means no limit."""

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = max(burst, 1.0)
        self._tokens = self._burst
        self._updated = time.monotonic()

    def take(self, units: float = 1.0) -> bool:
        """Spend ``units`` if the bucket holds them; False means over the limit."""
        if self._rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens < units:
            return False
        self._tokens -= units
        return True

    def wait_for(self, units: float = 1.0) -> float:
        """Seconds until ``units`` would be available."""
        if self._rate <= 0:
            return 0.0
        return max(units - self._tokens, 0.0) / self._rate


class PublisherLimits:
    """One bucket per publisher (API key, or address when the gateway is open)."""

    def __init__(self, rate: float, burst: float, *, max_publishers: int = 10_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max = max_publishers
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def limited(self) -> bool:
        """Whether there is a limit at all (a rate of 0 means none)."""
        return self._rate > 0

    def take(self, publisher: str, units: int) -> float:
        """0 when ``units`` events may be published now, else seconds to wait."""
        if self._rate <= 0:
            return 0.0
        bucket = self._buckets.get(publisher)
        if bucket is None:
            if len(self._buckets) >= self._max:
                self._buckets.clear()  # forgetting buckets only ever loosens the limit
            bucket = self._buckets[publisher] = TokenBucket(self._rate, self._burst)
        if bucket.take(units):
            return 0.0
        return max(bucket.wait_for(units), 0.001)


class FloodWindow:
    """Counts frames dropped within a window of ``seconds`` that opens at the first drop.

    A count of drops in a row would start over each time the bucket lets one
    frame through, which a client flooding faster than the refill triggers
    again and again; this count only starts over once the window has passed.
    """

    __slots__ = ("_count", "_opened", "_seconds")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._opened = 0.0
        self._count = 0

    def drop(self, now: float | None = None) -> int:
        """Count one dropped frame; answers the drops so far in its window (1 opens one)."""
        if now is None:
            now = time.monotonic()
        if self._count == 0 or now - self._opened >= self._seconds:
            self._opened = now
            self._count = 0
        self._count += 1
        return self._count
