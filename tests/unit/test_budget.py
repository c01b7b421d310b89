"""Budgets (docs/architecture.md#budgets-and-loops): every limit stops the work with
``budget_exceeded:<which>``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from itinerant.errors import BudgetExceeded, Disposition, InvalidSlip
from itinerant.wire.budget import DEFAULT_MAX_TOOL_CALLS, Budget

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
        ({"max_tool_calls": 2, "tool_calls": 3}, "tool_calls"),
        ({"max_tool_calls": 0, "tool_calls": 1}, "tool_calls"),
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


def test_tool_calls_are_spent_and_counted_down() -> None:
    b = budget(max_tool_calls=3).spent(tool_calls=2)
    assert (b.tool_calls, b.tool_calls_left) == (2, 1)
    b.check(NOW)
    assert b.spent(tool_calls=5).tool_calls_left == 0
    with pytest.raises(BudgetExceeded) as err:
        b.spent(tool_calls=2).check(NOW)
    assert err.value.which == "tool_calls"
    assert err.value.disposition is Disposition.FAIL_SAGA


def test_an_older_header_without_tool_calls_decodes_with_the_default_limit() -> None:
    raw = (
        b'{"max_hops":5,"deadline":"2027-01-01T12:02:00Z","max_tokens":10,'
        b'"max_cost_usd":0.1,"hops":1,"tokens":0,"cost_usd":0.0}'
    )
    b = Budget.decode(raw)
    assert (b.max_tool_calls, b.tool_calls) == (DEFAULT_MAX_TOOL_CALLS, 0)


def test_the_tool_call_limit_only_shrinks_and_is_clamped() -> None:
    before = budget(max_tool_calls=5, tool_calls=1)
    assert before.spent(tool_calls=1).within(before)
    assert not before.model_copy(update={"max_tool_calls": 6}).within(before)
    assert not before.model_copy(update={"tool_calls": 0}).within(before)
    ceiling = budget(max_tool_calls=2)
    assert not before.limits_within(ceiling)
    assert before.clamped(ceiling).max_tool_calls == 2


def test_parallel_branches_tool_calls_add_up_at_the_join() -> None:
    from itinerant.coordinator.saga_groups import merge_budgets

    base = budget(hops=2, tool_calls=1)
    merged = merge_budgets(
        base, [base.spent(hops=1, tool_calls=2), base.spent(hops=1, tool_calls=1)]
    )
    assert merged is not None
    assert (merged.hops, merged.tool_calls) == (4, 4)
