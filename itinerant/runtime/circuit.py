"""Circuit breakers, one per (service, downstream dependency): after ``threshold`` consecutive
retryable failures the circuit opens and calls fail fast (retryable ``CircuitOpen``) until
``reset_after_s`` passes; then one trial call is let through (half-open) and its outcome closes
or re-opens the circuit. State is exported as ``itinerant_circuit_breaker_state``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import IntEnum

from itinerant.errors import RetryableError
from itinerant.observability import metrics

log = logging.getLogger(__name__)


class CircuitState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitOpen(RetryableError):
    reason = "circuit_open"
    hint = "the dependency failed repeatedly; calls resume after the circuit's reset time"


@dataclass
class CircuitBreaker:
    service: str
    dependency: str
    threshold: int = 5
    reset_after_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._export()

    @contextmanager
    def guard(self) -> Iterator[None]:
        self.before()
        try:
            yield
        except RetryableError as exc:
            if not isinstance(exc, CircuitOpen):
                self.failure()
            raise
        self.success()

    def before(self) -> None:
        if self.state is CircuitState.OPEN:
            if self.clock() - self.opened_at < self.reset_after_s:
                raise CircuitOpen(
                    f"circuit to {self.dependency} is open after {self.failures} failures"
                )
            self._move(CircuitState.HALF_OPEN)

    def success(self) -> None:
        self.failures = 0
        if self.state is not CircuitState.CLOSED:
            self._move(CircuitState.CLOSED)

    def failure(self) -> None:
        self.failures += 1
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            if self.state is not CircuitState.OPEN:
                self._move(CircuitState.OPEN)

    def _move(self, state: CircuitState) -> None:
        log.warning(
            "circuit %s/%s: %s -> %s",
            self.service,
            self.dependency,
            self.state.name.lower(),
            state.name.lower(),
        )
        self.state = state
        self._export()

    def _export(self) -> None:
        metrics.CIRCUIT_STATE.labels(self.service, self.dependency).set(int(self.state))


_BREAKERS: dict[tuple[str, str], CircuitBreaker] = {}


def breaker(
    service: str, dependency: str, threshold: int = 5, reset_after_s: float = 10.0
) -> CircuitBreaker:
    key = (service, dependency)
    if key not in _BREAKERS:
        _BREAKERS[key] = CircuitBreaker(service, dependency, threshold, reset_after_s)
    return _BREAKERS[key]
