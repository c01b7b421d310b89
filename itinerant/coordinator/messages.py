"""The messages the coordinator sends, built: the first dispatch of a saga, a compensate
command, the dispatch after a join or a released approval, and the saga's result.

Every id is derived from the input that caused the message, so a redelivered input produces the
same messages (see docs/wire-contract.md#derived-ids).
"""

from __future__ import annotations

from datetime import datetime

from itinerant.observability import tracing
from itinerant.runtime import routing
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.wire import fastjson
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, OutMessage
from itinerant.wire.events import CompensateCommand
from itinerant.wire.ids import derived_id
from itinerant.wire.slip import Slip, Step

from .results import RESULT_TYPE, SagaResult, StepSummary
from .saga import Compensate, Dispatch, Saga, SagaState

SERVICE = "coordinator"
SOURCE = f"/itinerant/{SERVICE}"


def first_dispatch(
    settings: Settings,
    saga: Saga,
    request_id: str,
    first_step: Step,
    budget: Budget,
    data: bytes,
) -> OutMessage:
    """The message that starts a saga: the request's first payload to the mesh's entry step."""
    [dispatch] = routing.messages(
        settings,
        forward_id=derived_id(request_id, SERVICE, "dispatch"),
        causation_id=request_id,
        source=SOURCE,
        saga_id=saga.saga_id,
        slip=Slip(steps=[first_step]),
        budget=budget,
        data=data,
        traceparent=saga.traceparent,
        customer=saga.customer,
    )
    return tracing.stamp(signed(settings, dispatch), saga.saga_id)


def signed(settings: Settings, message: OutMessage) -> OutMessage:
    """Every message the coordinator sends is signed as the coordinator."""
    return mesh_keys(settings).sign(message, SERVICE)


def compensate_message(
    settings: Settings, saga: Saga, command: Compensate, cause: str
) -> OutMessage:
    step = command.step
    saga.note(saga.updated_at, "compensate", f"{step.agent}.{step.action} (step {step.index})")
    payload = CompensateCommand(
        action=step.action,
        step=step.index,
        branch=step.branch,
        output=step.output or {},
        reason=command.reason,
    )
    message = Envelope(
        id=derived_id(cause, SERVICE, f"compensate:{step.index}:{step.branch}"),
        type=f"itinerant.{step.agent}.compensate.v1",
        source=SOURCE,
        saga_id=saga.saga_id,
        data=payload.model_dump_json().encode(),
        causation_id=cause,
        traceparent=saga.traceparent,
        customer=saga.customer,
    ).to_message(settings.agent_topic(step.agent))
    return signed(settings, message)


def dispatch_messages(
    settings: Settings, saga: Saga, command: Dispatch, cause: str
) -> list[OutMessage]:
    """Gather: the merged output of a joined group goes to the step after it."""
    data = fastjson.dumps(command.output)
    messages = routing.messages(
        settings,
        forward_id=derived_id(cause, SERVICE, command.label or f"join:{command.group}"),
        causation_id=cause,
        source=SOURCE,
        saga_id=saga.saga_id,
        # An approval gate's visit is the coordinator's to sign (docs/security.md).
        slip=mesh_keys(settings).signed_slip(saga.saga_id, command.slip),
        budget=command.budget,
        data=data,
        traceparent=saga.traceparent,
        customer=saga.customer,
    )
    return [signed(settings, m) for m in messages]


def saga_result(saga: Saga, now: datetime) -> SagaResult:
    """The result of a finished saga: its state, why, its output and every step's timing."""
    duration = (now - saga.created_at).total_seconds()
    return SagaResult(
        saga_id=saga.saga_id,
        status=saga.state.value,
        reason=saga.reason,
        error=saga.error,
        output=saga.output if saga.state is SagaState.COMPLETED else None,
        steps=[
            StepSummary(
                index=s.index,
                branch=s.branch,
                agent=s.agent,
                action=s.action,
                status=s.status.value,
                duration_ms=s.duration_ms,
            )
            for s in saga.steps
        ],
        started_at=saga.created_at,
        finished_at=now,
        duration_ms=round(duration * 1000, 3),
        budget=saga.budget,
    )


def result_message(
    settings: Settings,
    saga_id: str,
    cause: str,
    result: SagaResult,
    traceparent: str | None = None,
) -> OutMessage:
    message = Envelope(
        id=derived_id(cause, SERVICE, "result"),
        type=RESULT_TYPE,
        source=SOURCE,
        saga_id=saga_id,
        data=result.model_dump_json().encode(),
        causation_id=cause,
        traceparent=traceparent,
    ).to_message(settings.results_topic)
    return signed(settings, message)
