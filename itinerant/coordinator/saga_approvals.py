"""The approval gate (human in the loop): hold a step until a human approves or rejects it.

The runtime forwards a step's output to the gate; the saga waits in ``awaiting_approval`` until a
decision arrives, or its approval timeout or deadline passes (see
docs/architecture.md#human-approval).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from itinerant.wire.budget import Budget
from itinerant.wire.slip import Slip

from .saga_commands import Command, Dispatch, Finish
from .saga_compensation import begin_compensation
from .saga_groups import open_group
from .saga_model import ApprovalHold, Saga, SagaState, StepRecord, StepStatus


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
    saga.record_unreported(slip, step, now)
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
    return _release(
        saga, hold.slip, hold.budget, hold.payload, message_id, now, step_timeout, by=by
    )


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
    by: str | None = None,
) -> list[Command]:
    step = slip.next
    after = slip.advanced("approval", message_id, now, skipped=skipped, by=by)
    spent = budget.spent(hops=1)
    saga.spent(spent)
    if after.at_end:
        saga.complete(payload, now)
        return [Finish()]
    saga.step_deadline = now + timedelta(seconds=step_timeout)
    open_group(saga, after, spent, now)
    return [
        Dispatch(group=step, slip=after, budget=spent, output=payload, label=f"approval:{step}")
    ]
