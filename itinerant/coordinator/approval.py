"""The control event a human's decision at an approval gate travels in.

A saga stops at an approval gate (a slip step ``{"approval": "<gate>"}``) when the mesh's
approval policy gives a reason. ``itinerant approvals approve|reject <saga> --why ...`` publishes
``ApprovalDecision`` on the saga events topic, keyed by saga id, so it is ordered with the saga's
own events.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DECISION_TYPE = "itinerant.saga.approval_decided"


class ApprovalDecision(BaseModel):
    """``itinerant.saga.approval_decided.v1``: a human approves or rejects a held step."""

    model_config = ConfigDict(extra="forbid")

    saga_id: str = Field(min_length=1, max_length=100)
    decision: Literal["approve", "reject"]
    by: str = Field(min_length=1, max_length=100)
    why: str = Field(min_length=1, max_length=500)
