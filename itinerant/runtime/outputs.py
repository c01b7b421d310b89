"""The messages a step sends: its progress event for the coordinator, then the forward to the
next step (one message, or one per branch of a parallel group).

Each has an id derived from the input message, a size check and a ``send`` span of its own in
the saga's trace (see docs/wire-contract.md#derived-ids).
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel

from itinerant.errors import BudgetExceeded, HandlerError, MessageTooLarge
from itinerant.observability import tracing
from itinerant.runtime import routing
from itinerant.runtime.agent import Agent, HandlerContext, HandlerSpec
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.wire import fastjson
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, OutMessage, now_utc
from itinerant.wire.events import StepEvent, StepEventKind, event_type
from itinerant.wire.ids import derived_id
from itinerant.wire.slip import ParallelGroup, Slip


class StepOutputs:
    """Builds the messages of one agent's steps."""

    def __init__(self, agent: Agent, settings: Settings) -> None:
        self.agent = agent
        self.settings = settings
        self.service = agent.name
        self.source = f"/itinerant/{agent.name}"
        self.keys = mesh_keys(settings)

    def message(
        self, env: Envelope, kind: str, topic: str, ce_type: str, data: bytes, **attrs: Any
    ) -> OutMessage:
        out = Envelope(
            id=derived_id(env.id, self.service, kind),
            type=ce_type,
            source=self.source,
            saga_id=env.saga_id,
            data=data,
            causation_id=env.id,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
            customer=env.customer,
            **attrs,
        )
        return self.checked(out.to_message(topic, self.settings.max_slip_bytes), kind)

    def checked(self, message: OutMessage, kind: str) -> OutMessage:
        """Size-checked, signed by this agent, and with a ``send`` span of its own in the
        saga's trace."""
        if len(message.value) > self.settings.max_message_bytes:
            raise MessageTooLarge(
                f"{self.service} produced a {len(message.value)}-byte {kind} message, over "
                f"ITINERANT_MAX_MESSAGE_BYTES={self.settings.max_message_bytes}"
            )
        saga = message.key.decode(errors="replace") if message.key else None
        return tracing.stamp(self.keys.sign(message, self.service), saga)

    def event(self, env: Envelope, event: StepEvent) -> OutMessage:
        return self.message(
            env,
            f"event:{event.kind.value}",
            self.settings.events_topic,
            event_type(event.kind),
            event.model_dump_json().encode(),
        )

    def step_event(
        self, env: Envelope, kind: StepEventKind, action: str, step: int, **fields: Any
    ) -> StepEvent:
        return StepEvent(
            kind=kind,
            saga_id=env.saga_id,
            agent=self.service,
            action=action,
            step=step,
            message_id=env.id,
            at=now_utc(),
            **fields,
        )

    def forward(self, env: Envelope, slip: Slip, budget: Budget, data: bytes) -> list[OutMessage]:
        """Messages for the step at the cursor: one, or one per branch of a parallel group."""
        messages = routing.messages(
            self.settings,
            forward_id=derived_id(env.id, self.service, "forward"),
            causation_id=env.id,
            source=self.source,
            saga_id=env.saga_id,
            slip=slip,
            budget=budget,
            data=data,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
            customer=env.customer,
        )
        return [self.checked(m, "forward") for m in messages]

    def after_step(
        self,
        env: Envelope,
        spec: HandlerSpec,
        ctx: HandlerContext,
        step_index: int,
        result: BaseModel,
        started: float,
        *,
        skipped: bool = False,
    ) -> list[OutMessage]:
        """The progress event, then the message(s) to the next step. A branch of a parallel
        group only reports to the coordinator, which joins the branches and moves on. A step
        the coordinator need not hear of (no side effect, not final, no group next) sends only
        its forward."""
        branch = ctx.slip.branch
        if ctx.route is not None and branch is not None:
            raise HandlerError(f"{self.service}.{spec.action} rerouted inside a parallel group")
        slip = ctx.slip if ctx.route is None else ctx.slip.with_remaining(ctx.route)
        slip = slip.advanced(self.service, env.id, now_utc(), skipped=skipped)
        slip = self.keys.signed_slip(env.saga_id, slip)
        slip.check_agents(self.settings.agents)
        budget = ctx.budget.spent(
            hops=1, tokens=ctx.tokens, cost_usd=ctx.cost_usd, tool_calls=ctx.tool_calls
        )
        if not budget.within(env.budget):
            raise BudgetExceeded(
                "budget", f"{self.service}.{spec.action} tried to raise the budget's limits"
            )
        data = result.model_dump_json().encode()
        final = slip.at_end
        reported = final or branch is not None or (spec.side_effects and not skipped)
        if not (reported or opens_group(slip)):
            # Nothing the coordinator must know now: the next progress event carries this
            # step's visit in its slip (docs/architecture.md#progress-events).
            return self.forward(env, slip, budget, data)
        event = self.step_event(
            env,
            StepEventKind.COMPLETED,
            spec.action,
            step_index,
            branch=branch,
            final=final,
            skipped=skipped,
            compensable=spec.side_effects
            and not skipped
            and spec.action in self.agent.compensations,
            output=fastjson.loads(data) if reported else None,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            budget=budget,
            slip=slip,
        )
        # The progress event is sent (and acknowledged) before the forward, so the coordinator
        # knows of a side effect before any later step can fail and ask for its compensation.
        outputs = [self.event(env, event)]
        if not final and branch is None:
            outputs += self.forward(env, slip, budget, data)
        return outputs


def opens_group(slip: Slip) -> bool:
    """Whether the step at the cursor is a parallel group, which the coordinator opens (and
    times) on the progress event of the step before it."""
    return not slip.at_end and isinstance(slip.current, ParallelGroup)
