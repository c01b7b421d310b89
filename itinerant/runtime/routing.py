"""The one router: the messages for the step at a slip's cursor. One message for an agent step,
one per branch for a parallel group (scatter), one to the coordinator for an approval gate. The
runtime uses it after every step, the coordinator for a request's first step and after a join or
an approval (gather), so every hop is routed the same way (docs/architecture.md#routing)."""

from __future__ import annotations

from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, OutMessage
from itinerant.wire.events import APPROVAL_REQUEST_TYPE
from itinerant.wire.ids import branch_id
from itinerant.wire.slip import Approval, Slip


def step_type(agent: str, action: str) -> str:
    return f"itinerant.{agent}.{action}.v1"


def messages(
    settings: Settings,
    *,
    forward_id: str,
    causation_id: str,
    source: str,
    saga_id: str,
    slip: Slip,
    budget: Budget | None,
    data: bytes,
    traceparent: str | None,
    tracestate: str | None = None,
    customer: str | None = None,
) -> list[OutMessage]:
    """Where the step at the cursor goes; branch ``i`` gets id ``uuid5(forward_id, branch:i)``.

    An agent step goes to ``agent.<name>``; an approval gate to the saga events topic, where the
    coordinator holds it."""
    out = []
    for target, step in slip.deliveries():
        message_id = forward_id if target.branch is None else branch_id(forward_id, target.branch)
        if isinstance(step, Approval):
            topic, kind = settings.events_topic, APPROVAL_REQUEST_TYPE + ".v1"
        else:
            topic, kind = settings.agent_topic(step.agent), step_type(step.agent, step.action)
        envelope = Envelope(
            id=message_id,
            type=kind,
            source=source,
            saga_id=saga_id,
            data=data,
            causation_id=causation_id,
            slip=target,
            budget=budget,
            traceparent=traceparent,
            tracestate=tracestate,
            customer=customer,
        )
        out.append(envelope.to_message(topic, settings.max_slip_bytes))
    return out
