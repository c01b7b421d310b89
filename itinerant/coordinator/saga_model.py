"""The saga document the coordinator stores, and the small changes every transition makes to it.

A saga is its state, its step records, its open parallel groups, the step held at an approval
gate, its spend and a timeline of what happened (see docs/architecture.md#saga-states).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from itinerant.wire.budget import Budget
from itinerant.wire.events import StepEvent
from itinerant.wire.slip import Slip, Step, Visit


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


#: A step already applied, or being undone: a repeat of its event changes nothing.
DONE_OR_UNDOING = frozenset(
    {StepStatus.COMPLETED, StepStatus.SKIPPED, StepStatus.COMPENSATING, StepStatus.COMPENSATED}
)

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
    limits: Budget | None = Field(default=None, description="the budget set at ingress")
    customer: str | None = Field(default=None, description="whom the saga acts for")

    def step(self, index: int, branch: int | None = None) -> StepRecord | None:
        for record in self.steps:
            if record.index == index and record.branch == branch:
                return record
        return None

    def note(self, at: datetime, event: str, detail: str = "") -> None:
        self.timeline.append(TimelineEntry(at=at, event=event, detail=detail[:300]))

    def record(self, ev: StepEvent, status: StepStatus) -> StepRecord:
        """The step record of ``ev``, replacing any earlier one of the same step and branch."""
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
            # what compensation needs; a branch's output is in its group, the last step's in output
            output=ev.output if ev.compensable else None,
            reason=ev.reason,
            error=ev.error,
        )
        self._put(record)
        return record

    def _put(self, record: StepRecord) -> None:
        """``record`` in place of any earlier one of the same step and branch, in step order."""
        self.steps = [r for r in self.steps if r.key != record.key] + [record]
        self.steps.sort(key=lambda r: (r.index, -1 if r.branch is None else r.branch))

    def record_unreported(self, slip: Slip, before: int, now: datetime) -> None:
        """Steps before ``before`` that sent no progress event of their own (no side effect, so
        the runtime folds their report into the next one; docs/architecture.md#progress-events):
        recorded from their visits in ``slip``. A parked step among them completed after its
        replay, so the saga resumes."""
        for visit in slip.visited:
            index = visit.step
            if index is None or index >= before or index >= len(slip.steps):
                continue
            step = slip.steps[index]
            existing = self.step(index)
            replayed = (
                existing is not None
                and existing.status is StepStatus.DEADLETTERED
                and existing.message_id == visit.id
            )
            if not isinstance(step, Step) or (existing is not None and not replayed):
                continue
            status = StepStatus.SKIPPED if visit.skipped else StepStatus.COMPLETED
            self._put(
                StepRecord(
                    index=index,
                    agent=visit.agent,
                    action=step.action,
                    status=status,
                    message_id=visit.id,
                    at=visit.at,
                )
            )
            label = f"{visit.agent}.{step.action}"
            self.note(now, f"step_{status.value}", f"{label} (reported with a later step)")
            self.completed_after_replay(visit.id, now, label)

    def spent(self, budget: Budget) -> None:
        """Keep the budget with the most spend seen (events of parallel branches may cross)."""
        if self.budget is None or (budget.hops, budget.tokens) >= (
            self.budget.hops,
            self.budget.tokens,
        ):
            self.budget = budget

    def completed_after_replay(self, message_id: str, now: datetime, label: str) -> None:
        """Resume if ``message_id`` is the parked step's message: it completed after a replay."""
        if self.state is SagaState.PARKED and message_id == self.parked_message_id:
            self.resume(now, label)

    def resume(self, now: datetime, label: str) -> None:
        """Back to running: the parked step completed after a replay."""
        self.state = SagaState.RUNNING
        self.reason = self.error = self.parked_message_id = None
        self.note(now, "resumed", f"{label} completed after replay")

    def complete(self, output: dict[str, Any] | None, now: datetime) -> None:
        """The last step is done: the saga completed with ``output`` (its result is due)."""
        self.state = SagaState.COMPLETED
        self.output = output
        self.step_deadline = None
        self.note(now, "completed")
