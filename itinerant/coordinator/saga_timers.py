"""Timers: what a saga does when one of its deadlines passes with nothing heard.

The request's own deadline, a parallel group's timeout, a running step's timeout and an approval
nobody gave in time all stop the saga and compensate it (see
docs/architecture.md#timers-and-deadlines).
"""

from __future__ import annotations

from datetime import datetime

from .saga_commands import Command
from .saga_compensation import begin_compensation
from .saga_model import Saga, SagaState, StepStatus


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
