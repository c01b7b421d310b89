"""Building the messages for the step at a slip's cursor: one message for a step, one per branch
for a parallel group (scatter). Used by the runtime after a step and by the coordinator after a
join (gather), so both route the same way."""

from __future__ import annotations

from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope
from itinerant.wire.ids import branch_id
from itinerant.wire.slip import Slip


def step_type(agent: str, action: str) -> str:
    return f"itinerant.{agent}.{action}.v1"


def deliveries(
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
) -> list[tuple[str, Envelope]]:
    """(agent, envelope) for each delivery; branch ``i`` gets id ``uuid5(forward_id, branch:i)``."""
    out = []
    for target, step in slip.deliveries():
        message_id = forward_id if target.branch is None else branch_id(forward_id, target.branch)
        out.append(
            (
                step.agent,
                Envelope(
                    id=message_id,
                    type=step_type(step.agent, step.action),
                    source=source,
                    saga_id=saga_id,
                    data=data,
                    causation_id=causation_id,
                    slip=target,
                    budget=budget,
                    traceparent=traceparent,
                    tracestate=tracestate,
                ),
            )
        )
    return out
