"""Parallel groups (scatter-gather): the coordinator gathers the branches and joins them.

Branches report here; when the group's join holds (all, first, quorum:N) their outputs are
merged in branch order and the step after the group is dispatched
(see docs/architecture.md#parallel-groups-and-joins).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from itinerant.wire.budget import Budget
from itinerant.wire.events import StepEvent
from itinerant.wire.slip import ParallelGroup, Slip, Visit

from .saga_commands import Command, Dispatch, Finish
from .saga_compensation import compensate_late
from .saga_model import (
    DONE_OR_UNDOING,
    BranchResult,
    GroupState,
    Saga,
    SagaState,
    StepStatus,
)


def on_branch_completed(
    saga: Saga, ev: StepEvent, now: datetime, step_timeout: float, label: str
) -> list[Command]:
    assert ev.branch is not None
    existing = saga.step(ev.step, ev.branch)
    if existing is not None and existing.status in DONE_OR_UNDOING:
        return []  # a duplicate branch result
    record = saga.record(ev, StepStatus.SKIPPED if ev.skipped else StepStatus.COMPLETED)
    saga.note(now, "branch_completed", f"{label} in {ev.duration_ms:.0f} ms")
    saga.completed_after_replay(ev.message_id, now, label)
    if saga.state not in (SagaState.RUNNING, SagaState.PARKED):
        return compensate_late(saga, record, now, label)
    group = saga.groups.get(ev.step)
    if group is None and ev.slip is not None:
        group = open_group(saga, ev.slip, None, now)
    if group is None:
        return []
    if not group.open:
        saga.note(now, "late_branch", f"{label} arrived after the {group.join} join; ignored")
        return compensate_late(saga, record, now, label)
    visit = (
        ev.slip.visited[-1]
        if ev.slip and ev.slip.visited
        else Visit(agent=ev.agent, id=ev.message_id, at=ev.at)
    )
    group.results[ev.branch] = BranchResult(output=ev.output or {}, visit=visit, budget=ev.budget)
    if not group.satisfied():
        return []
    if saga.state is SagaState.PARKED:
        # The join holds without the parked branch (first, quorum): that branch lost the race.
        saga.resume(now, f"{label}: the {group.join} join holds without the parked branch")
    return join(saga, group, now, step_timeout)


def join(saga: Saga, group: GroupState, now: datetime, step_timeout: float) -> list[Command]:
    group.joined_at = now
    ordered = [group.results[i] for i in sorted(group.results)]
    merged = merge_outputs([r.output for r in ordered])
    slip = group.slip.joined([r.visit for r in ordered])
    budget = merge_budgets(group.base_budget, [r.budget for r in ordered if r.budget])
    took = (now - group.started_at).total_seconds() * 1000
    saga.note(
        now,
        "joined",
        f"group {group.index} ({group.join}) joined {sorted(group.results)} after {took:.0f} ms",
    )
    if slip.at_end:
        saga.complete(merged, now)
        return [Finish()]
    saga.step_deadline = now + timedelta(seconds=step_timeout)
    open_group(saga, slip, budget, now)
    return [Dispatch(group=group.index, slip=slip, budget=budget, output=merged)]


def open_group(saga: Saga, slip: Slip, budget: Budget | None, now: datetime) -> GroupState | None:
    """Record a parallel group at the slip's cursor when its branches are (about to be) out."""
    if slip.at_end or not isinstance(slip.current, ParallelGroup):
        return None
    if slip.next in saga.groups:
        return saga.groups[slip.next]
    spec = slip.current
    base_slip = slip.model_copy(update={"branch": None})
    if budget is None or slip.branch is not None:
        # Opened from a branch result: its visit and hop are not part of the group's base.
        base_slip = base_slip.model_copy(update={"visited": slip.visited[:-1]})
        budget = budget.model_copy(update={"hops": max(budget.hops - 1, 0)}) if budget else None
    group = GroupState(
        index=slip.next,
        join=spec.join,
        size=len(spec.parallel),
        started_at=now,
        timeout_at=now + timedelta(seconds=spec.timeout_s),
        slip=base_slip,
        base_budget=budget,
    )
    saga.groups[slip.next] = group
    saga.step_deadline = group.timeout_at
    return group


def merge_outputs(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Branch outputs merged in branch order: for each top-level key, the last non-null value."""
    merged: dict[str, Any] = {}
    for output in outputs:
        for key, value in output.items():
            if value is not None or key not in merged:
                merged[key] = value
    return merged


def merge_budgets(base: Budget | None, branches: list[Budget]) -> Budget | None:
    """Every branch's spend counts: hops, tokens, cost and tool calls add up across branches."""
    if not branches:
        return base
    root = base or branches[0].model_copy(
        update={"hops": 0, "tokens": 0, "cost_usd": 0.0, "tool_calls": 0}
    )
    return root.spent(
        hops=sum(b.hops - root.hops for b in branches),
        tokens=sum(b.tokens - root.tokens for b in branches),
        cost_usd=sum(b.cost_usd - root.cost_usd for b in branches),
        tool_calls=sum(b.tool_calls - root.tool_calls for b in branches),
    )
