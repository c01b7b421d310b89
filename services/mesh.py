"""The travel mesh: the reference application. Its agents, its flows, the request it accepts,
the payload its first step gets, and when a human must approve. Adding an agent is a module
under services/ and one line in ``AGENTS`` (docs/tutorial.md)."""

from __future__ import annotations

from typing import Any

from itinerant import Mesh, Skill
from services import approval, flows
from services.contracts.trip import TripDocument, TripRequest
from services.flights.agent import agent as flights
from services.hotels.agent import agent as hotels
from services.inventory.mcp_server import side_servers
from services.notifier.agent import agent as notifier
from services.planner.agent import agent as planner
from services.probe.agent import agent as probe
from services.samples import load_trips
from services.validator.agent import agent as validator

AGENTS = [planner, flights, hotels, validator, notifier]


def start(request: TripRequest) -> TripDocument:
    """What the planner receives for a new request: the trip document, empty but for it."""
    return TripDocument(request=request)


def from_text(text: str, options: dict[str, Any]) -> dict[str, Any]:
    """A trip asked for in plain words; the traveller's name from ``metadata.itinerant``."""
    return {"traveller": {"name": options.get("traveller") or "A2A client"}, "text": text}


def summary(output: dict[str, Any]) -> str | None:
    """The confirmation of a booked trip: reference and total."""
    confirmation = output.get("confirmation")
    if not confirmation:
        return None
    return f"{confirmation['reference']} ${confirmation['total_usd']:.2f}"


mesh = Mesh(
    "travel",
    agents=AGENTS,
    optional_agents=[probe],
    servers=side_servers,  # diagnostics for the routing tests: runs only when listed
    entry=flows.PLAN,
    flows=flows.FLOWS,
    request_model=TripRequest,
    start=start,
    approval_policy=approval.needs_approval,
    description=(
        "Plans and books trips (flights and hotel, validated against the traveller's budget, "
        "confirmed) as a saga across a Kafka mesh of agents; a failed step undoes the bookings "
        "already made. Refunds over the approval threshold wait for a human."
    ),
    request_help=(
        "Send one message per task: a data part holding an itinerant.request.v1 object "
        "(schemas/itinerant.request.v1.json: traveller, origin, destination, depart_date, "
        "return_date, travellers, budget_usd, or text), or a text part with the trip in plain "
        "words (the traveller's name from metadata.itinerant.traveller, else 'A2A client')."
    ),
    skills=[
        Skill(
            "plan-trip",
            "Plan a trip",
            "Understands a trip request, structured or free text, and plans it: cities (IATA "
            "codes), dates, travellers, budget; a same-day return needs no hotel.",
            tags=("travel", "planning"),
            examples=(
                "A long weekend in Rome from London, 2027-04-09 to 2027-04-12, 2 travellers",
            ),
        ),
        Skill(
            "book-trip",
            "Book a trip",
            "Books the flights and the hotel, checks the total against the budget and returns "
            "the itinerary with its confirmation; any failure cancels what was booked (the task "
            "ends failed, with the reason).",
            tags=("travel", "booking", "saga"),
            examples=(
                '{"traveller":{"name":"Ada"},"origin":"MAD","destination":"LIS",'
                '"depart_date":"2027-03-12","return_date":"2027-03-15","travellers":2}',
            ),
        ),
        Skill(
            "refund",
            "Refund a booking",
            "Refunds a booking by its reference (booking_ref, kind refund); a refund over the "
            "approval threshold waits for an operator's decision (the task is input-required).",
            tags=("travel", "refund"),
        ),
    ],
    schemas={"itinerant.request.v1": TripRequest, "itinerant.trip.v1": TripDocument},
    samples=load_trips,
    replicas={"flights": 2},  # docker-compose runs two, splitting its partitions
    from_text=from_text,
    summary=summary,
)
