"""A saga's start, and its transitions on the progress events agents send.

Step completed (the last one completes the saga), failed (business failure: compensate), dead-
lettered (park until replayed or discarded), compensated, compensation failed
(see docs/architecture.md#saga-states).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from itinerant.wire.events import StepEvent, StepEventKind

from .saga_commands import Command, Finish
from .saga_compensation import begin_compensation, compensate_late, on_compensated
from .saga_groups import on_branch_completed, open_group
from .saga_model import DONE_OR_UNDOING, Saga, SagaState, StepStatus


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
        saga.spent(ev.budget)
    if ev.kind is StepEventKind.COMPLETED:
        if ev.slip is not None:
            saga.record_unreported(ev.slip, ev.step, now)
        if ev.branch is not None:
            return on_branch_completed(saga, ev, now, step_timeout, label)
        return _completed(saga, ev, now, step_timeout, label)
    if ev.kind is StepEventKind.FAILED:
        saga.record(ev, StepStatus.FAILED)
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
        saga.record(ev, StepStatus.DEADLETTERED)
        saga.note(now, "step_deadlettered", f"{label}: {ev.reason}: {ev.error}")
        if saga.state is SagaState.RUNNING:
            saga.state = SagaState.PARKED
            saga.reason = ev.reason
            saga.error = ev.error
            saga.parked_message_id = ev.message_id
            saga.step_deadline = None
        return []
    if ev.kind is StepEventKind.COMPENSATED:
        return on_compensated(saga, ev, now, label)
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


def _label(ev: StepEvent) -> str:
    branch = f"[{ev.branch}]" if ev.branch is not None else ""
    return f"{ev.agent}.{ev.action}{branch}"


def _completed(
    saga: Saga, ev: StepEvent, now: datetime, step_timeout: float, label: str
) -> list[Command]:
    existing = saga.step(ev.step)
    if existing is not None and existing.status in DONE_OR_UNDOING:
        return []  # a repeat of an event already applied
    record = saga.record(ev, StepStatus.SKIPPED if ev.skipped else StepStatus.COMPLETED)
    how = "skipped (its condition does not hold)" if ev.skipped else f"in {ev.duration_ms:.0f} ms"
    saga.note(now, "step_skipped" if ev.skipped else "step_completed", f"{label} {how}")
    saga.completed_after_replay(ev.message_id, now, label)
    if saga.state in (SagaState.COMPENSATING, SagaState.COMPENSATED, SagaState.FAILED):
        return compensate_late(saga, record, now, label)
    if saga.state is not SagaState.RUNNING:
        return []
    if ev.final:
        saga.complete(ev.output, now)
        return [Finish()]
    saga.step_deadline = now + timedelta(seconds=step_timeout)
    if ev.slip is not None and not ev.slip.at_end:
        open_group(saga, ev.slip, ev.budget, now)
    return []
