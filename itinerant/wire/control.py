"""Control messages: what operators and humans send the coordinator on the saga events topic.

Both are CloudEvents keyed by saga id, so they are ordered with the saga's own progress events
(see docs/wire-contract.md#control-messages):

- a discard (``itinerant dlq discard``, or an A2A cancel) stops a saga and compensates it;
- an approval decision (``itinerant approvals approve|reject``) releases or rejects a step held at
  an approval gate.

The third message the coordinator reads besides progress events, a step's output forwarded to an
approval gate, is ``APPROVAL_REQUEST_TYPE`` in :mod:`itinerant.wire.events`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DISCARD_TYPE = "itinerant.saga.discard_requested"
#: The ``ce_type`` of a discard, with its version.
DISCARD_REQUESTED = f"{DISCARD_TYPE}.v1"

DECISION_TYPE = "itinerant.saga.approval_decided"


class DiscardRequest(BaseModel):
    """``itinerant.saga.discard_requested.v1``: an operator (or an A2A cancel) stops a saga."""

    model_config = ConfigDict(extra="forbid")

    saga_id: str
    why: str = Field(min_length=1, max_length=500)
    entry: str | None = None
    by: str = "operator"


class ApprovalDecision(BaseModel):
    """``itinerant.saga.approval_decided.v1``: a human approves or rejects a held step."""

    model_config = ConfigDict(extra="forbid")

    saga_id: str = Field(min_length=1, max_length=100)
    decision: Literal["approve", "reject"]
    by: str = Field(min_length=1, max_length=100)
    why: str = Field(min_length=1, max_length=500)
