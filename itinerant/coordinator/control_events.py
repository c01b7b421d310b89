"""What arrives on the saga events topic, read and applied to its saga.

Four kinds: a progress event of a step, a discard, a human's approval decision (the control
messages of :mod:`itinerant.wire.control`), and a step's output forwarded to an approval gate
(see docs/wire-contract.md#control-messages). Each is turned into the matching transition of the
state machine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from itinerant.errors import SchemaViolation
from itinerant.mesh import Mesh
from itinerant.observability import metrics
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.control import DECISION_TYPE, DISCARD_TYPE, ApprovalDecision, DiscardRequest
from itinerant.wire.envelope import Envelope, parse_type
from itinerant.wire.events import APPROVAL_REQUEST_TYPE, StepEvent
from itinerant.wire.slip import Approval, Slip

from .saga import (
    Command,
    Saga,
    SagaState,
    begin_compensation,
    on_approval_request,
    on_decision,
    on_event,
)


@dataclass(frozen=True)
class GateRequest:
    """A step's output forwarded by the runtime to the approval gate."""

    saga_id: str
    slip: Slip
    budget: Budget
    payload: dict[str, Any]
    reasons: list[str]
    amount_usd: float | None


Control = StepEvent | DiscardRequest | ApprovalDecision | GateRequest


def read_control(env: Envelope, mesh: Mesh) -> Control:
    """The event in ``env``; raises an :class:`ItinerantError` for anything else."""
    name = parse_type(env.type)[0]
    if name == APPROVAL_REQUEST_TYPE:
        return _gate_request(env, mesh)
    if name.split(".")[:2] != ["itinerant", "saga"]:
        raise SchemaViolation(f"not a saga event: {env.type}", reason="unsupported_type")
    try:
        if name == DISCARD_TYPE:
            return DiscardRequest.model_validate_json(env.data)
        if name == DECISION_TYPE:
            return ApprovalDecision.model_validate_json(env.data)
        return StepEvent.model_validate_json(env.data)
    except ValidationError as exc:
        raise SchemaViolation(f"invalid saga event: {exc.errors()[:3]}") from exc


def _gate_request(env: Envelope, mesh: Mesh) -> GateRequest:
    if env.slip is None or env.budget is None:
        raise SchemaViolation(
            "an approval step needs ce_routingslip and ce_budget headers", reason="missing_slip"
        )
    if env.slip.branch is not None or env.slip.at_end:
        raise SchemaViolation("an approval request's slip must point at an approval gate")
    if not isinstance(env.slip.current, Approval):
        raise SchemaViolation("an approval request's slip does not point at an approval gate")
    try:
        payload = json.loads(env.data)
        if not isinstance(payload, dict):
            raise ValueError(f"a JSON object is expected, not {type(payload).__name__}")
        check = mesh.approval_policy(payload)
    except (ValueError, ValidationError) as exc:
        raise SchemaViolation(
            f"the approval policy cannot read the payload at the gate: {exc}"
        ) from exc
    return GateRequest(env.saga_id, env.slip, env.budget, payload, check.reasons, check.amount)


def apply_control(
    saga: Saga, event: Control, message_id: str, now: datetime, settings: Settings
) -> list[Command]:
    """The transition ``event`` makes on ``saga``: mutates it and returns what must be done."""
    if isinstance(event, DiscardRequest):
        saga.updated_at = now
        saga.note(now, "discard_requested", f"by {event.by}: {event.why}")
        return begin_compensation(saga, now, "discarded", f"{event.why} ({event.by})")
    if isinstance(event, GateRequest):
        commands = on_approval_request(
            saga,
            step=event.slip.next,
            message_id=message_id,
            slip=event.slip,
            budget=event.budget,
            payload=event.payload,
            reasons=event.reasons,
            amount_usd=event.amount_usd,
            now=now,
            approval_timeout=settings.approval_timeout_s,
            step_timeout=settings.step_timeout_s,
        )
        outcome = "requested" if saga.state is SagaState.AWAITING_APPROVAL else "not_needed"
        metrics.APPROVALS.labels(outcome).inc()
        return commands
    if isinstance(event, ApprovalDecision):
        waiting = saga.state is SagaState.AWAITING_APPROVAL
        commands = on_decision(
            saga,
            approve=event.decision == "approve",
            by=event.by,
            why=event.why,
            message_id=message_id,
            now=now,
            step_timeout=settings.step_timeout_s,
        )
        if waiting:
            metrics.APPROVALS.labels(f"{event.decision}d").inc()
        return commands
    return on_event(saga, event, now, settings.step_timeout_s)
