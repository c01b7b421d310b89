"""Circuit breaker: opens after the threshold, fails fast, half-opens after the reset time."""

from __future__ import annotations

import pytest

from itinerant.errors import DependencyUnavailable, NonRetryableError
from itinerant.observability import metrics
from itinerant.runtime.circuit import CircuitBreaker, CircuitOpen, CircuitState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failing(cb: CircuitBreaker) -> None:
    with pytest.raises(DependencyUnavailable), cb.guard():
        raise DependencyUnavailable("down")


def gauge(cb: CircuitBreaker) -> float:
    value = metrics.CIRCUIT_STATE.labels(cb.service, cb.dependency)._value.get()
    return float(value)


def test_opens_after_threshold_and_fails_fast() -> None:
    clock = Clock()
    cb = CircuitBreaker("svc-a", "inventory", threshold=3, reset_after_s=10, clock=clock)
    for _ in range(3):
        failing(cb)
    assert cb.state is CircuitState.OPEN
    assert gauge(cb) == 2
    calls = []
    with pytest.raises(CircuitOpen), cb.guard():
        calls.append(1)
    assert calls == []  # failed fast: the dependency was not called
    assert CircuitOpen("x").retryable


def test_half_open_trial_closes_or_reopens() -> None:
    clock = Clock()
    cb = CircuitBreaker("svc-b", "llm", threshold=1, reset_after_s=5, clock=clock)
    failing(cb)
    clock.now = 6
    failing(cb)  # the trial call failed: open again, from now
    assert cb.state is CircuitState.OPEN
    clock.now = 8
    with pytest.raises(CircuitOpen), cb.guard():
        pass
    clock.now = 12
    with cb.guard():
        pass
    assert cb.state is CircuitState.CLOSED and cb.failures == 0
    assert gauge(cb) == 0


def test_non_retryable_errors_do_not_count() -> None:
    cb = CircuitBreaker("svc-c", "inventory", threshold=1)
    with pytest.raises(NonRetryableError), cb.guard():
        raise NonRetryableError("bad request")
    assert cb.state is CircuitState.CLOSED
