"""Compensation: undo a stopped saga's completed side effects, newest first, one at a time.

Also undoes a side effect reported after the saga stopped, or by a branch that lost its join
(see docs/architecture.md#compensation).
"""

from __future__ import annotations

from datetime import datetime

from itinerant.wire.events import StepEvent

from .saga_commands import Command, Compensate, Finish
from .saga_model import Saga, SagaState, StepRecord, StepStatus


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
    return next_compensation(saga, now)


def next_compensation(saga: Saga, now: datetime) -> list[Command]:
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


def on_compensated(saga: Saga, ev: StepEvent, now: datetime, label: str) -> list[Command]:
    """A step was undone: take it off the queue and ask for the next one."""
    record = saga.step(ev.step, ev.branch)
    if record is None or record.status is StepStatus.COMPENSATED:
        return []
    record.status = StepStatus.COMPENSATED
    saga.note(now, "step_compensated", label)
    if record.key in saga.compensation_queue:
        saga.compensation_queue.remove(record.key)
    if saga.state is not SagaState.COMPENSATING:
        return []
    return next_compensation(saga, now)


def compensate_late(saga: Saga, record: StepRecord, now: datetime, label: str) -> list[Command]:
    """A side effect reported after the saga stopped, or by a branch that lost its join:
    undo it too (events may cross on their way)."""
    if not record.compensable or record.status is not StepStatus.COMPLETED:
        return []
    saga.note(now, "late_step", f"{label} is not part of the outcome; compensating it")
    record.status = StepStatus.COMPENSATING
    if saga.state is SagaState.COMPENSATING:
        saga.compensation_queue.append(record.key)  # finish only once it is undone
    return [Compensate(record, saga.reason or "late")]
