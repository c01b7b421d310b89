"""Per-principal limits of the gateway (docs/security-gateway.md#limits): a token bucket of
requests and a cap on open SSE streams. Both answer how long to wait when they refuse."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """``rate`` requests per second per principal, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Clock = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def take(self, principal: str) -> float:
        """0 when the request may go now; otherwise the seconds until it may."""
        now = self.clock()
        bucket = self._buckets.get(principal)
        if bucket is None:
            bucket = self._buckets[principal] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class StreamSlots:
    """At most ``limit`` open streams per principal."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, principal: str) -> bool:
        count = self._open.get(principal, 0)
        if count >= self.limit:
            return False
        self._open[principal] = count + 1
        return True

    def release(self, principal: str) -> None:
        count = self._open.get(principal, 0) - 1
        if count > 0:
            self._open[principal] = count
        else:
            self._open.pop(principal, None)

    def open(self, principal: str) -> int:
        return self._open.get(principal, 0)
