"""``itinerant.result.v1``: what the coordinator writes to the results topic, keyed by saga id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from itinerant.wire.budget import Budget

RESULT_TYPE = "itinerant.result.v1"


class StepSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int
    branch: int | None = None
    agent: str
    action: str
    status: str
    duration_ms: float


class Origin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: int
    offset: int


class SagaResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    saga_id: str
    status: str
    reason: str | None = None
    error: str | None = None
    output: dict[str, Any] | None = Field(
        default=None, description="the final payload of a completed saga"
    )
    steps: list[StepSummary] = []
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    origin: Origin | None = None
    budget: Budget | None = Field(
        default=None, description="the request's limits and its spend (hops, tokens, cost)"
    )
