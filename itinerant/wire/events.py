"""Progress events every agent sends to ``saga.events`` and commands the coordinator sends back."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from itinerant.wire.budget import Budget
from itinerant.wire.slip import Slip


class StepEventKind(StrEnum):
    COMPLETED = "step_completed"
    FAILED = "step_failed"
    DEADLETTERED = "step_deadlettered"
    COMPENSATED = "step_compensated"
    COMPENSATION_FAILED = "compensation_failed"


class StepEvent(BaseModel):
    """``itinerant.saga.<kind>.v1``: what happened to one step of one saga."""

    model_config = ConfigDict(extra="forbid")

    kind: StepEventKind
    saga_id: str
    agent: str
    action: str
    step: int = Field(ge=-1, description="index of the step in the slip (-1: unknown)")
    branch: int | None = None
    message_id: str
    final: bool = False
    compensable: bool = False
    skipped: bool = False
    output: dict[str, Any] | None = None
    reason: str | None = None
    error: str | None = None
    at: datetime
    duration_ms: float = 0.0
    budget: Budget | None = None
    slip: Slip | None = Field(default=None, description="the slip after this step")

    @property
    def ce_type(self) -> str:
        return event_type(self.kind)


def event_type(kind: StepEventKind) -> str:
    return f"itinerant.saga.{kind.value}.v1"


class CompensateCommand(BaseModel):
    """``itinerant.<agent>.compensate.v1``: undo what ``action`` did, given its recorded output."""

    model_config = ConfigDict(extra="forbid")

    action: str
    step: int
    branch: int | None = None
    output: dict[str, Any]
    reason: str


COMPENSATE_ACTION = "compensate"

#: A step's output forwarded to an approval gate: the coordinator holds or passes it.
APPROVAL_REQUEST_TYPE = "itinerant.saga.approval_requested"
