"""Planner: turns a travel request, structured or free text, into a plan and chooses the route."""

from __future__ import annotations

from itinerant import Flow
from itinerant.errors import BusinessFailure
from itinerant.runtime.agent import Agent, AgentServices, HandlerContext
from itinerant.runtime.llm import FEEDBACK_MARKER, DeterministicProvider
from services.contracts.trip import Plan, Replan, TripDocument, TripRequest
from services.flows import REFUND, TRIP, TRIP_SEQUENTIAL
from services.inventory import catalogue
from services.settings import travel_settings

from .understanding import PlanDraft, read_free_text

agent = Agent("planner", "Turns a travel request into a plan and a route through the agents.")

SUPPORTED = "supported: round trips between " + ", ".join(sorted(catalogue().cities.values()))


@agent.on_start
def register_rules(services: AgentServices) -> None:
    if isinstance(services.provider, DeterministicProvider):
        services.provider.register("plan_trip", read_free_text)


@agent.handler("plan")
async def plan(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    draft = await understand(trip.request, ctx, trip.replan)
    if draft.flow == "refund":
        if trip.request.booking_ref is None:
            raise BusinessFailure("a refund needs a booking_ref", reason="incomplete_request")
        ctx.follow(REFUND)
        return trip
    if draft.flow != "trip":
        raise BusinessFailure(
            f"cannot handle this request ({draft.note or draft.flow}); {SUPPORTED}",
            reason="unsupported_request",
        )
    the_plan = to_plan(draft, trip.request, planned_by=ctx.provider.name)
    ctx.follow(trip_flow(parallel=travel_settings().parallel_search))
    # A re-plan starts from the request again: quotes of the rejected plan are dropped.
    return trip.model_copy(
        update={"plan": the_plan, "flight_quote": None, "hotel_quote": None, "validation": None}
    )


def prompt_for(request: TripRequest, replan: Replan | None) -> str:
    """The user's words first; the validator's findings on a rejected plan after the marker."""
    assert request.text is not None
    if replan is None:
        return request.text
    issues = "\n".join(f"- {issue}" for issue in replan.issues)
    return (
        f"{request.text}{FEEDBACK_MARKER}"
        f"Your previous plan (attempt {replan.attempt}) was rejected because these facts are "
        f"wrong according to our inventory:\n{issues}\n"
        "Plan again. Propose only flight numbers, hotels and prices you are sure of; leave a "
        "proposal field empty rather than guess."
    )


async def understand(
    request: TripRequest, ctx: HandlerContext, replan: Replan | None = None
) -> PlanDraft:
    if request.text is None:
        return PlanDraft(
            flow=request.kind or "trip",
            origin=request.origin,
            destination=request.destination,
            depart_date=request.depart_date,
            return_date=request.return_date,
            travellers=request.travellers,
            budget_usd=request.budget_usd,
        )
    # Budget before and after, circuit breaker, usage: ctx.generate does it all.
    completion = await ctx.generate("plan_trip", prompt_for(request, replan), PlanDraft)
    draft = completion.value
    # Structured fields the user gave win over what was read from the text.
    return draft.model_copy(
        update={
            k: v
            for k, v in request.model_dump(
                include={"origin", "destination", "depart_date", "return_date", "budget_usd"}
            ).items()
            if v is not None
        }
    )


def to_plan(draft: PlanDraft, request: TripRequest, *, planned_by: str) -> Plan:
    known = catalogue().cities
    missing = [
        name
        for name in ("origin", "destination", "depart_date", "return_date")
        if getattr(draft, name) is None
    ]
    if missing:
        raise BusinessFailure(
            f"the request does not say its {', '.join(missing)}; {SUPPORTED}",
            reason="incomplete_request",
        )
    assert draft.origin and draft.destination and draft.depart_date and draft.return_date
    for code in (draft.origin, draft.destination):
        if code not in known:
            raise BusinessFailure(f"no service to {code!r}; {SUPPORTED}", reason="unknown_city")
    if draft.origin == draft.destination:
        raise BusinessFailure("origin and destination are the same", reason="invalid_request")
    if draft.return_date < draft.depart_date:
        raise BusinessFailure("the return is before the departure", reason="invalid_request")
    return Plan(
        flow="trip",
        origin=draft.origin,
        destination=draft.destination,
        depart_date=draft.depart_date,
        return_date=draft.return_date,
        travellers=draft.travellers or request.travellers,
        budget_usd=draft.budget_usd,
        needs_hotel=draft.return_date > draft.depart_date,
        planned_by=planned_by,
        proposal=draft.proposal,
    )


def trip_flow(*, parallel: bool = True) -> Flow:
    """The trip flow (see services/flows.py), its searches in parallel unless switched off."""
    return TRIP if parallel else TRIP_SEQUENTIAL
