"""The saga state machine (DESIGN §8), pure: state in, event in, new state and commands out.

    running -> completed
    running -> parked -> running                      (dead-lettered step, then replayed)
    running -> awaiting_approval -> running           (approval gate: a human approved)
    running | parked | awaiting_approval -> compensating -> compensated
                          (business failure, timeout, budget, discard, approval rejected/expired)
    compensating -> failed                            (a compensation could not finish)
    rejected                                          (ingress refused the request)

It is also the aggregator of parallel groups (scatter-gather, DESIGN §4): branches report here,
and when the group's join holds (all, first, quorum:N) their outputs are merged in branch order
and the step after the group is dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from itinerant.wire.budget import Budget
from itinerant.wire.events import StepEvent, StepEventKind
from itinerant.wire.slip import ParallelGroup, Slip, Visit


class SagaState(StrEnum):
    RUNNING = "running"
    PARKED = "parked"
    AWAITING_APPROVAL = "awaiting_approval"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPLETED = "completed"
    FAILED = "failed"
    REJECTED = "rejected"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset(
    {SagaState.COMPLETED, SagaState.COMPENSATED, SagaState.FAILED, SagaState.REJECTED}
)


class StepStatus(StrEnum):
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"
    AWAITING_APPROVAL = "awaiting_approval"
    DEADLETTERED = "deadlettered"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


StepKey = tuple[int, int | None]


class StepRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    branch: int | None = None
    agent: str
    action: str
    status: StepStatus
    message_id: str
    at: datetime
    duration_ms: float = 0.0
    compensable: bool = False
    output: dict[str, Any] | None = None
    reason: str | None = None
    error: str | None = None

    @property
    def key(self) -> StepKey:
        return (self.index, self.branch)


class BranchResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: dict[str, Any]
    visit: Visit
    budget: Budget | None = None


class GroupState(BaseModel):
    """A parallel group being gathered."""

    model_config = ConfigDict(extra="forbid")

    index: int
    join: str
    size: int
    started_at: datetime
    timeout_at: datetime
    slip: Slip  # the slip as fanned out: cursor on the group, no branch
    base_budget: Budget | None = None
    results: dict[int, BranchResult] = Field(default_factory=dict)
    failed: list[int] = Field(default_factory=list)
    joined_at: datetime | None = None

    @property
    def needed(self) -> int:
        if self.join == "all":
            return self.size
        if self.join == "first":
            return 1
        return min(int(self.join.split(":", 1)[1]), self.size)

    @property
    def open(self) -> bool:
        return self.joined_at is None

    def satisfied(self) -> bool:
        return len(self.results) >= self.needed

    def hopeless(self) -> bool:
        return self.size - len(self.failed) < self.needed


class ApprovalHold(BaseModel):
    """A step held at the approval gate: what to send on once a human says yes."""

    model_config = ConfigDict(extra="forbid")

    step: int
    message_id: str
    requested_at: datetime
    deadline: datetime
    reasons: list[str]
    amount_usd: float | None = None
    slip: Slip  # as it reached the gate: cursor on the approval step
    budget: Budget
    payload: dict[str, Any]
    decision: Literal["approved", "rejected", "expired"] | None = None
    by: str | None = None
    why: str | None = None
    decided_at: datetime | None = None


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: datetime
    event: str
    detail: str = ""


class Saga(BaseModel):
    model_config = ConfigDict(extra="forbid")

    saga_id: str
    state: SagaState
    request: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    deadline: datetime
    step_deadline: datetime | None = None
    reason: str | None = None
    error: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    compensation_queue: list[StepKey] = Field(default_factory=list)
    groups: dict[int, GroupState] = Field(default_factory=dict)
    output: dict[str, Any] | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
    parked_message_id: str | None = None
    traceparent: str | None = None
    approval: ApprovalHold | None = None
    budget: Budget | None = Field(default=None, description="limits and spend, latest known")

    def step(self, index: int, branch: int | None = None) -> StepRecord | None:
        for record in self.steps:
            if record.index == index and record.branch == branch:
                return record
        return None

    def note(self, at: datetime, event: str, detail: str = "") -> None:
        self.timeline.append(TimelineEntry(at=at, event=event, detail=detail[:300]))


_DONE_OR_UNDOING = frozenset(
    {StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.COMPENSATING, StepStatus.COMPENSATED}
)


# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compensate:
    step: StepRecord
    reason: str


@dataclass(frozen=True)
class Dispatch:
    """Send the merged output of a joined group (or a released approval) to the step after it."""

    group: int
    slip: Slip
    budget: Budget | None
    output: dict[str, Any]
    label: str = ""  # names the forward's derived id (default: join:<group>)


@dataclass(frozen=True)
class Finish:
    """Write the saga's result."""


Command = Compensate | Dispatch | Finish


# --- transitions ----------------------------------------------------------------------------


def start(
    saga_id: str, request: dict[str, Any], now: datetime, deadline: datetime, step_timeout: float
) -> Saga:
    saga = Saga(
        saga_id=saga_id,
        state=SagaState.RUNNING,
        request=request,
        created_at=now,
        updated_at=now,
        deadline=deadline,
        step_deadline=now + timedelta(seconds=step_timeout),
    )
    saga.note(now, "started")
    return saga


def on_event(saga: Saga, ev: StepEvent, now: datetime, step_timeout: float) -> list[Command]:
    """Apply one progress event; mutates ``saga`` and returns what must be done."""
    saga.updated_at = now
    label = _label(ev)
    if ev.budget is not None:
        _spent(saga, ev.budget)
    if ev.kind is StepEventKind.COMPLETED:
        if ev.branch is not None:
            return _branch_completed(saga, ev, now, step_timeout, label)
        return _completed(saga, ev, now, step_timeout, label)
    if ev.kind is StepEventKind.FAILED:
        _record(saga, ev, StepStatus.FAILED)
        saga.note(now, "step_failed", f"{label}: {ev.reason}: {ev.error}")
        group = saga.groups.get(ev.step) if ev.branch is not None else None
        if group is not None:
            if not group.open or ev.branch in group.failed:
                return []
            group.failed.append(ev.branch)  # type: ignore[arg-type]
            if not group.hopeless():
                saga.note(now, "branch_failed", f"{label}; the {group.join} join can still hold")
                return []
        return begin_compensation(saga, now, ev.reason or "business_failure", ev.error)
    if ev.kind is StepEventKind.DEADLETTERED:
        _record(saga, ev, StepStatus.DEADLETTERED)
        saga.note(now, "step_deadlettered", f"{label}: {ev.reason}: {ev.error}")
        if saga.state is SagaState.RUNNING:
            saga.state = SagaState.PARKED
            saga.reason = ev.reason
            saga.error = ev.error
            saga.parked_message_id = ev.message_id
            saga.step_deadline = None
        return []
    if ev.kind is StepEventKind.COMPENSATED:
        return _compensated(saga, ev, now, label)
    if ev.kind is StepEventKind.COMPENSATION_FAILED:
        record = saga.step(ev.step, ev.branch)
        if record is not None:
            record.status = StepStatus.COMPENSATION_FAILED
            record.error = ev.error
        saga.note(now, "compensation_failed", f"{label}: {ev.reason}: {ev.error}")
        if saga.state.terminal:
            return []
        saga.state = SagaState.FAILED
        saga.error = f"compensation of {label} failed: {ev.error}"
        return [Finish()]
    return []


def _spent(saga: Saga, budget: Budget) -> None:
    """Keep the budget with the most spend seen (events of parallel branches may cross)."""
    if saga.budget is None or (budget.hops, budget.tokens) >= (
        saga.budget.hops,
        saga.budget.tokens,
    ):
        saga.budget = budget


def _label(ev: StepEvent) -> str:
    branch = f"[{ev.branch}]" if ev.branch is not None else ""
    return f"{ev.agent}.{ev.action}{branch}"


def _completed(
    saga: Saga, ev: StepEvent, now: datetime, step_timeout: float, label: str
) -> list[Command]:
    existing = saga.step(ev.step)
    if existing is not None and existing.status in _DONE_OR_UNDOING:
        return []  # a repeat of an event already applied
    record = _record(saga, ev, StepStatus.SKIPPED if ev.skipped else StepStatus.COMPLETED)
    how = "skipped (its condition does not hold)" if ev.skipped else f"in {ev.duration_ms:.0f} ms"
    saga.note(now, "step_skipped" if ev.skipped else "step_completed", f"{label} {how}")
    if saga.state is SagaState.PARKED and ev.message_id == saga.parked_message_id:
        _resume(saga, now, label)
    if saga.state in (SagaState.COMPENSATING, SagaState.COMPENSATED, SagaState.FAILED):
        return _late(saga, record, now, label)
    if saga.state is not SagaState.RUNNING:
        return []
    if ev.final:
        return _complete(saga, ev.output, now)
    saga.step_deadline = now + timedelta(seconds=step_timeout)
    if ev.slip is not None and not ev.slip.at_end:
        _open_group(saga, ev.slip, ev.budget, now)
    return []


def _branch_completed(
    saga: Saga, ev: StepEvent, now: datetime, step_timeout: float, label: str
) -> list[Command]:
    assert ev.branch is not None
    existing = saga.step(ev.step, ev.branch)
    if existing is not None and existing.status in _DONE_OR_UNDOING:
        return []  # a duplicate branch result
    record = _record(saga, ev, StepStatus.SKIPPED if ev.skipped else StepStatus.COMPLETED)
    saga.note(now, "branch_completed", f"{label} in {ev.duration_ms:.0f} ms")
    if saga.state is SagaState.PARKED and ev.message_id == saga.parked_message_id:
        _resume(saga, now, label)
    if saga.state not in (SagaState.RUNNING, SagaState.PARKED):
        return _late(saga, record, now, label)
    group = saga.groups.get(ev.step)
    if group is None and ev.slip is not None:
        group = _open_group(saga, ev.slip, None, now)
    if group is None:
        return []
    if not group.open:
        saga.note(now, "late_branch", f"{label} arrived after the {group.join} join; ignored")
        return _late(saga, record, now, label)
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
        _resume(saga, now, f"{label}: the {group.join} join holds without the parked branch")
    return _join(saga, group, now, step_timeout)


def _join(saga: Saga, group: GroupState, now: datetime, step_timeout: float) -> list[Command]:
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
        return _complete(saga, merged, now)
    saga.step_deadline = now + timedelta(seconds=step_timeout)
    _open_group(saga, slip, budget, now)
    return [Dispatch(group=group.index, slip=slip, budget=budget, output=merged)]


def _open_group(saga: Saga, slip: Slip, budget: Budget | None, now: datetime) -> GroupState | None:
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
    """Every branch's spend counts: hops, tokens and cost add up across branches."""
    if not branches:
        return base
    root = base or branches[0].model_copy(update={"hops": 0, "tokens": 0, "cost_usd": 0.0})
    return root.spent(
        hops=sum(b.hops - root.hops for b in branches),
        tokens=sum(b.tokens - root.tokens for b in branches),
        cost_usd=sum(b.cost_usd - root.cost_usd for b in branches),
    )


def _complete(saga: Saga, output: dict[str, Any] | None, now: datetime) -> list[Command]:
    saga.state = SagaState.COMPLETED
    saga.output = output
    saga.step_deadline = None
    saga.note(now, "completed")
    return [Finish()]


def _resume(saga: Saga, now: datetime, label: str) -> None:
    saga.state = SagaState.RUNNING
    saga.reason = saga.error = saga.parked_message_id = None
    saga.note(now, "resumed", f"{label} completed after replay")


def _late(saga: Saga, record: StepRecord, now: datetime, label: str) -> list[Command]:
    """A side effect reported after the saga stopped, or by a branch that lost its join:
    undo it too (events may cross in flight)."""
    if not record.compensable or record.status is not StepStatus.COMPLETED:
        return []
    saga.note(now, "late_step", f"{label} is not part of the outcome; compensating it")
    record.status = StepStatus.COMPENSATING
    if saga.state is SagaState.COMPENSATING:
        saga.compensation_queue.append(record.key)  # finish only once it is undone
    return [Compensate(record, saga.reason or "late")]


def _compensated(saga: Saga, ev: StepEvent, now: datetime, label: str) -> list[Command]:
    record = saga.step(ev.step, ev.branch)
    if record is None or record.status is StepStatus.COMPENSATED:
        return []
    record.status = StepStatus.COMPENSATED
    saga.note(now, "step_compensated", label)
    if record.key in saga.compensation_queue:
        saga.compensation_queue.remove(record.key)
    if saga.state is not SagaState.COMPENSATING:
        return []
    return _next_compensation(saga, now)


def begin_compensation(
    saga: Saga, now: datetime, reason: str, error: str | None = None
) -> list[Command]:
    """Stop the saga: compensate completed side effects in reverse order, then finish."""
    if saga.state.terminal or saga.state is SagaState.COMPENSATING:
        return []
    saga.state = SagaState.COMPENSATING
    saga.reason = reason
    saga.error = error
    saga.step_deadline = None
    saga.compensation_queue = [
        r.key
        for r in sorted(saga.steps, key=lambda r: (r.index, r.branch or 0), reverse=True)
        if r.compensable and r.status is StepStatus.COMPLETED
    ]
    undo = [f"{i}" if b is None else f"{i}[{b}]" for i, b in saga.compensation_queue]
    saga.note(now, "compensating", f"{reason}; undoing steps {undo}")
    return _next_compensation(saga, now)


def _next_compensation(saga: Saga, now: datetime) -> list[Command]:
    if not saga.compensation_queue:
        saga.state = SagaState.COMPENSATED
        saga.note(now, "compensated", saga.reason or "")
        return [Finish()]
    record = saga.step(*saga.compensation_queue[0])
    assert record is not None
    if record.status is StepStatus.COMPENSATING:
        return []  # already asked for; wait for its step_compensated
    record.status = StepStatus.COMPENSATING
    return [Compensate(record, saga.reason or "compensation")]


# --- the approval gate (human in the loop) --------------------------------------------------


def on_approval_request(
    saga: Saga,
    *,
    step: int,
    message_id: str,
    slip: Slip,
    budget: Budget,
    payload: dict[str, Any],
    reasons: list[str],
    amount_usd: float | None,
    now: datetime,
    approval_timeout: float,
    step_timeout: float,
) -> list[Command]:
    """The runtime forwarded a step's output to the approval gate. With no reason to ask, the
    gate opens at once (its visit marked skipped); otherwise the saga waits for a human until the
    approval timeout or its own deadline, whichever comes first."""
    saga.updated_at = now
    existing = saga.step(step)
    if existing is not None:
        return []  # a repeat
    if saga.state is not SagaState.RUNNING:
        saga.note(now, "approval_ignored", f"gate at step {step} reached while {saga.state}")
        return []
    if not reasons:
        _gate_record(saga, step, message_id, now, StepStatus.COMPLETED)
        saga.note(now, "approval_not_needed", f"step {step}: no approval policy applies")
        return _release(saga, slip, budget, payload, message_id, now, step_timeout, skipped=True)
    deadline = min(now + timedelta(seconds=approval_timeout), saga.deadline)
    _gate_record(saga, step, message_id, now, StepStatus.AWAITING_APPROVAL)
    saga.approval = ApprovalHold(
        step=step,
        message_id=message_id,
        requested_at=now,
        deadline=deadline,
        reasons=reasons,
        amount_usd=amount_usd,
        slip=slip,
        budget=budget,
        payload=payload,
    )
    saga.state = SagaState.AWAITING_APPROVAL
    saga.reason = "approval_required"
    saga.error = "; ".join(reasons)
    saga.step_deadline = deadline
    saga.note(now, "awaiting_approval", f"step {step}: {saga.error}; until {deadline.isoformat()}")
    return []


def on_decision(
    saga: Saga,
    *,
    approve: bool,
    by: str,
    why: str,
    message_id: str,
    now: datetime,
    step_timeout: float,
) -> list[Command]:
    """A human's approve or reject (a control event on the saga's timeline, with who and why)."""
    saga.updated_at = now
    verb = "approve" if approve else "reject"
    hold = saga.approval
    if saga.state is not SagaState.AWAITING_APPROVAL or hold is None or hold.decision:
        saga.note(now, "approval_ignored", f"{verb} by {by}: {why} (saga is {saga.state})")
        return []
    hold.decision = "approved" if approve else "rejected"
    hold.by, hold.why, hold.decided_at = by, why, now
    record = saga.step(hold.step)
    if not approve:
        if record is not None:
            record.status = StepStatus.FAILED
            record.reason = "approval_rejected"
            record.error = f"rejected by {by}: {why}"
        saga.note(now, "rejected", f"by {by}: {why}")
        return begin_compensation(saga, now, "approval_rejected", f"rejected by {by}: {why}")
    if record is not None:
        record.status = StepStatus.COMPLETED
        record.duration_ms = round((now - hold.requested_at).total_seconds() * 1000, 3)
    saga.note(now, "approved", f"by {by}: {why}")
    saga.state = SagaState.RUNNING
    saga.reason = saga.error = None
    return _release(saga, hold.slip, hold.budget, hold.payload, message_id, now, step_timeout)


def _gate_record(
    saga: Saga, step: int, message_id: str, now: datetime, status: StepStatus
) -> StepRecord:
    record = StepRecord(
        index=step, agent="approval", action="gate", status=status, message_id=message_id, at=now
    )
    saga.steps = sorted(
        [*saga.steps, record], key=lambda r: (r.index, -1 if r.branch is None else r.branch)
    )
    return record


def _release(
    saga: Saga,
    slip: Slip,
    budget: Budget,
    payload: dict[str, Any],
    message_id: str,
    now: datetime,
    step_timeout: float,
    *,
    skipped: bool = False,
) -> list[Command]:
    step = slip.next
    after = slip.advanced("approval", message_id, now, skipped=skipped)
    spent = budget.spent(hops=1)
    _spent(saga, spent)
    if after.at_end:
        return _complete(saga, payload, now)
    saga.step_deadline = now + timedelta(seconds=step_timeout)
    _open_group(saga, after, spent, now)
    return [
        Dispatch(group=step, slip=after, budget=spent, output=payload, label=f"approval:{step}")
    ]


def on_tick(saga: Saga, now: datetime) -> list[Command]:
    """Deadlines: the request's own, a parallel group's timeout, a running step's timeout, an
    approval nobody gave in time."""
    waiting = (SagaState.RUNNING, SagaState.PARKED, SagaState.AWAITING_APPROVAL)
    if saga.state in waiting and now >= saga.deadline:
        saga.updated_at = now
        if saga.approval is not None and saga.state is SagaState.AWAITING_APPROVAL:
            saga.approval.decision = "expired"
        return begin_compensation(
            saga, now, "budget_exceeded:deadline", f"deadline {saga.deadline.isoformat()} passed"
        )
    if saga.state is SagaState.AWAITING_APPROVAL:
        hold = saga.approval
        if hold is not None and now >= hold.deadline:
            saga.updated_at = now
            hold.decision = "expired"
            record = saga.step(hold.step)
            if record is not None:
                record.status = StepStatus.FAILED
                record.reason = "approval_timeout"
            return begin_compensation(
                saga, now, "approval_timeout", f"no approval by {hold.deadline.isoformat()}"
            )
        return []
    if saga.state is not SagaState.RUNNING:
        return []
    for group in saga.groups.values():
        if group.open and now >= group.timeout_at:
            saga.updated_at = now
            return begin_compensation(
                saga,
                now,
                "group_timeout",
                f"parallel group {group.index} ({group.join}) had {sorted(group.results)} of "
                f"{group.size} branches after {(group.timeout_at - group.started_at).seconds}s",
            )
    if saga.step_deadline and now >= saga.step_deadline:
        saga.updated_at = now
        done = sorted(r.index for r in saga.steps if r.status is StepStatus.COMPLETED)
        return begin_compensation(
            saga, now, "step_timeout", f"no progress after step(s) {done} before the step timeout"
        )
    return []


def _record(saga: Saga, ev: StepEvent, status: StepStatus) -> StepRecord:
    record = StepRecord(
        index=ev.step,
        branch=ev.branch,
        agent=ev.agent,
        action=ev.action,
        status=status,
        message_id=ev.message_id,
        at=ev.at,
        duration_ms=ev.duration_ms,
        compensable=ev.compensable,
        output=ev.output if ev.compensable or ev.final or ev.branch is not None else None,
        reason=ev.reason,
        error=ev.error,
    )
    saga.steps = [r for r in saga.steps if r.key != record.key] + [record]
    saga.steps.sort(key=lambda r: (r.index, -1 if r.branch is None else r.branch))
    return record
