"""Who may tell the coordinator what (docs/security.md#who-may-send-what).

A request is believed to come from its signer when it is signed; a delegate (the gateway) signs
for a caller it authenticated and names it in ``ce_customer``; an unsigned (bare) request is
anonymous and owns only its own saga. On the events topic only the agent that ran a step reports
it, only approvers decide at a gate and only operators discard; a decision's ``by`` is the
verified signer, whatever the payload says.
"""

from __future__ import annotations

from itinerant.errors import Unauthenticated
from itinerant.security.signing import CUSTOMER_HEADER, MeshKeys
from itinerant.settings import Settings
from itinerant.wire.control import ApprovalDecision, DiscardRequest
from itinerant.wire.envelope import Envelope, InRecord
from itinerant.wire.events import StepEvent

from .control_events import Control, GateRequest
from .saga_model import Saga

_MAX_CUSTOMER = 128


class Callers:
    def __init__(self, settings: Settings, keys: MeshKeys) -> None:
        self.settings = settings
        self.keys = keys
        self.agents = frozenset(settings.agents)

    def identify(self, record: InRecord, saga_id: str) -> tuple[str | None, str | None]:
        """(verified sender, customer) of a request; (None, None) for a bare one."""
        if not self.keys.is_signed(record.header):
            return None, None
        sender = self.keys.verify(record)
        if sender not in self.settings.delegates:
            return sender, sender
        raw = record.header(CUSTOMER_HEADER)
        customer = raw.decode(errors="replace") if raw else ""
        if not customer or len(customer) > _MAX_CUSTOMER or not customer.isprintable():
            raise Unauthenticated(
                f"{sender!r} publishes for its callers and must name one in {CUSTOMER_HEADER}"
            )
        return sender, customer

    def authorized(self, env: Envelope, event: Control) -> Control:
        """``event`` if its verified signer may send it (with ``by`` set to the signer)."""
        signer = env.signer or ""
        if event.saga_id != env.saga_id:
            raise Unauthenticated("the event names another saga than its ce_sagaid")
        if not self.keys.required:
            return event
        if isinstance(event, StepEvent):
            if event.agent != signer or signer not in self.agents:
                raise Unauthenticated(f"{signer!r} may not report a step of {event.agent!r}")
            return event
        if isinstance(event, GateRequest):
            if signer not in self.agents and signer != "coordinator":
                raise Unauthenticated(f"{signer!r} may not bring a step to an approval gate")
            self.keys.verify_visits(env.saga_id, event.slip)
            return event
        if isinstance(event, ApprovalDecision):
            if signer not in self.settings.approvers:
                raise Unauthenticated(
                    f"{signer!r} is not an approver (ITINERANT_APPROVERS: "
                    f"{self.settings.approvers})"
                )
            return event.model_copy(update={"by": signer})
        if isinstance(event, DiscardRequest):
            if signer in self.settings.operators:
                return event.model_copy(update={"by": signer})
            if signer in self.settings.delegates and env.customer:
                # A cancel for a caller: applied only to that caller's saga (may_stop).
                return event.model_copy(update={"by": f"{env.customer} (via {signer})"})
            raise Unauthenticated(f"{signer!r} is not an operator and may not discard")
        raise Unauthenticated(f"unexpected event {type(event).__name__}")

    def may_stop(self, saga: Saga, env: Envelope, event: Control) -> bool:
        """False for a delegate's cancel of a saga that is not its caller's."""
        if not isinstance(event, DiscardRequest) or not self.keys.required:
            return True
        if env.signer in self.settings.operators:
            return True
        return env.customer is not None and env.customer == saga.customer

    def budget_kept(self, saga: Saga, event: Control) -> bool:
        """False when ``event`` carries a budget above the one the saga was given at ingress."""
        budget = event.budget if isinstance(event, StepEvent | GateRequest) else None
        if budget is None or saga.limits is None:
            return True
        return budget.limits_within(saga.limits)
