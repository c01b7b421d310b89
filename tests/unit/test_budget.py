"""Budgets (docs/architecture.md#budgets-and-loops): every limit stops the work with
``budget_exceeded:<which>``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from itinerant.errors import BudgetExceeded, Disposition, InvalidSlip
from itinerant.wire.budget import Budget

NOW = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)


def budget(**changes: object) -> Budget:
    base: dict[str, object] = {
        "max_hops": 5,
        "deadline": NOW + timedelta(minutes=2),
        "max_tokens": 1000,
        "max_cost_usd": 0.5,
    }
    return Budget.model_validate({**base, **changes})


def test_within_limits_passes() -> None:
    budget(hops=4, tokens=1000, cost_usd=0.5).check(NOW)


@pytest.mark.parametrize(
    ("changes", "which"),
    [
        ({"hops": 5}, "hops"),
        ({"hops": 6}, "hops"),
        ({"deadline": NOW}, "deadline"),
        ({"deadline": NOW - timedelta(seconds=1)}, "deadline"),
        ({"tokens": 1001}, "tokens"),
        ({"cost_usd": 0.5001}, "cost"),
        ({"max_tokens": 0, "tokens": 1}, "tokens"),
    ],
)
def test_each_limit_raises_budget_exceeded(changes: dict[str, object], which: str) -> None:
    with pytest.raises(BudgetExceeded) as info:
        budget(**changes).check(NOW)
    assert info.value.which == which
    assert info.value.reason == f"budget_exceeded:{which}"
    assert info.value.disposition is Disposition.FAIL_SAGA


def test_check_defaults_to_the_current_time() -> None:
    past = budget(deadline=datetime.now(UTC) - timedelta(seconds=1))
    with pytest.raises(BudgetExceeded) as info:
        past.check()
    assert info.value.which == "deadline"
    budget(deadline=datetime.now(UTC) + timedelta(minutes=1)).check()


def test_spent_accumulates_and_returns_a_new_budget() -> None:
    start = budget()
    after = start.spent(hops=1, tokens=100, cost_usd=0.1).spent(hops=1, tokens=50, cost_usd=0.2)
    assert (start.hops, start.tokens, start.cost_usd) == (0, 0, 0.0)
    assert after.hops == 2
    assert after.tokens == 150
    assert after.cost_usd == pytest.approx(0.3)
    assert after.tokens_left == 850
    assert after.max_hops == 5 and after.deadline == start.deadline
    assert budget(tokens=2000, max_tokens=1000).tokens_left == 0


def test_spending_past_a_limit_is_caught_by_the_next_check() -> None:
    spent = budget().spent(hops=5)
    with pytest.raises(BudgetExceeded, match="hop budget of 5"):
        spent.check(NOW)


def test_encode_decode_round_trip() -> None:
    original = budget(hops=3, tokens=12, cost_usd=0.0123)
    assert Budget.decode(original.encode()) == original


@pytest.mark.parametrize(
    "raw",
    [b"nope", b"{}", b'{"max_hops": 0, "deadline": "2027-01-01T00:00:00Z"}', b"[]"],
)
def test_decode_garbage_is_invalid_budget(raw: bytes) -> None:
    with pytest.raises(InvalidSlip) as info:
        Budget.decode(raw)
    assert info.value.reason == "invalid_budget"
    assert "ce_budget" in str(info.value)
