"""The saga state machine (DESIGN §8), pure: state in, event in, new state and commands out.

running -> completed
running -> parked -> running                      (dead-lettered step, then replayed)
running | parked -> compensating -> compensated   (business failure, timeout, budget, discard)
compensating -> failed                            (a compensation could not finish)
rejected                                          (ingress refused the request)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.runtime.events import StepEvent, StepEventKind


class SagaState(StrEnum):
    RUNNING = "running"
    PARKED = "parked"
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
    FAILED = "failed"
    DEADLETTERED = "deadlettered"
    COMPENSATING = "compensating"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"


class StepRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
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
    compensation_queue: list[int] = Field(default_factory=list)
    output: dict[str, Any] | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
    parked_message_id: str | None = None
    traceparent: str | None = None

    def step(self, index: int) -> StepRecord | None:
        for record in self.steps:
            if record.index == index:
                return record
        return None

    def note(self, at: datetime, event: str, detail: str = "") -> None:
        self.timeline.append(TimelineEntry(at=at, event=event, detail=detail[:300]))


_DONE_OR_UNDOING = frozenset(
    {StepStatus.COMPLETED, StepStatus.COMPENSATING, StepStatus.COMPENSATED}
)


# --- commands -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compensate:
    step: StepRecord
    reason: str


@dataclass(frozen=True)
class Finish:
    """Write the saga's result."""


Command = Compensate | Finish


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
    saga.note(now, "started", "dispatched to planner")
    return saga


def on_event(saga: Saga, ev: StepEvent, now: datetime, step_timeout: float) -> list[Command]:
    """Apply one progress event; mutates ``saga`` and returns what must be done."""
    saga.updated_at = now
    label = f"{ev.agent}.{ev.action}"
    if ev.kind is StepEventKind.COMPLETED:
        return _completed(saga, ev, now, step_timeout, label)
    if ev.kind is StepEventKind.FAILED:
        _record(saga, ev, StepStatus.FAILED)
        saga.note(now, "step_failed", f"{label}: {ev.reason}: {ev.error}")
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
        record = saga.step(ev.step)
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


def _completed(
    saga: Saga, ev: StepEvent, now: datetime, step_timeout: float, label: str
) -> list[Command]:
    existing = saga.step(ev.step)
    if existing is not None and existing.status in _DONE_OR_UNDOING:
        return []  # a repeat of an event already applied
    record = _record(saga, ev, StepStatus.COMPLETED)
    saga.note(now, "step_completed", f"{label} in {ev.duration_ms:.0f} ms")
    if saga.state is SagaState.PARKED:
        saga.state = SagaState.RUNNING
        saga.reason = saga.error = saga.parked_message_id = None
        saga.note(now, "resumed", f"{label} completed after replay")
    if saga.state in (SagaState.COMPENSATING, SagaState.COMPENSATED, SagaState.FAILED):
        # A side effect reported after compensation began (events may cross): undo it too.
        if record.compensable:
            saga.note(now, "late_step", f"{label} completed after the saga stopped; compensating")
            record.status = StepStatus.COMPENSATING
            if saga.state is SagaState.COMPENSATING:
                saga.compensation_queue.append(record.index)  # finish only once it is undone
            return [Compensate(record, saga.reason or "late")]
        return []
    if saga.state is not SagaState.RUNNING:
        return []
    if ev.final:
        saga.state = SagaState.COMPLETED
        saga.output = ev.output
        saga.step_deadline = None
        saga.note(now, "completed")
        return [Finish()]
    saga.step_deadline = now + timedelta(seconds=step_timeout)
    return []


def _compensated(saga: Saga, ev: StepEvent, now: datetime, label: str) -> list[Command]:
    record = saga.step(ev.step)
    if record is None or record.status is StepStatus.COMPENSATED:
        return []
    record.status = StepStatus.COMPENSATED
    saga.note(now, "step_compensated", label)
    if ev.step in saga.compensation_queue:
        saga.compensation_queue.remove(ev.step)
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
        r.index
        for r in sorted(saga.steps, key=lambda r: r.index, reverse=True)
        if r.compensable and r.status is StepStatus.COMPLETED
    ]
    saga.note(now, "compensating", f"{reason}; undoing steps {saga.compensation_queue}")
    return _next_compensation(saga, now)


def _next_compensation(saga: Saga, now: datetime) -> list[Command]:
    if not saga.compensation_queue:
        saga.state = SagaState.COMPENSATED
        saga.note(now, "compensated", saga.reason or "")
        return [Finish()]
    record = saga.step(saga.compensation_queue[0])
    assert record is not None
    if record.status is StepStatus.COMPENSATING:
        return []  # already asked for; wait for its step_compensated
    record.status = StepStatus.COMPENSATING
    return [Compensate(record, saga.reason or "compensation")]


def on_tick(saga: Saga, now: datetime) -> list[Command]:
    """Deadlines: the request's own, and the step timeout of a running saga."""
    if saga.state in (SagaState.RUNNING, SagaState.PARKED) and now >= saga.deadline:
        saga.updated_at = now
        return begin_compensation(
            saga, now, "budget_exceeded:deadline", f"deadline {saga.deadline.isoformat()} passed"
        )
    if saga.state is SagaState.RUNNING and saga.step_deadline and now >= saga.step_deadline:
        saga.updated_at = now
        done = sorted(r.index for r in saga.steps if r.status is StepStatus.COMPLETED)
        return begin_compensation(
            saga, now, "step_timeout", f"no progress after step(s) {done} before the step timeout"
        )
    return []


def _record(saga: Saga, ev: StepEvent, status: StepStatus) -> StepRecord:
    record = StepRecord(
        index=ev.step,
        agent=ev.agent,
        action=ev.action,
        status=status,
        message_id=ev.message_id,
        at=ev.at,
        duration_ms=ev.duration_ms,
        compensable=ev.compensable,
        output=ev.output if ev.compensable or ev.final else None,
        reason=ev.reason,
        error=ev.error,
    )
    saga.steps = [r for r in saga.steps if r.index != ev.step] + [record]
    saga.steps.sort(key=lambda r: r.index)
    return record
