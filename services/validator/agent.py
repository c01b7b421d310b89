"""Validator: checks the trip against the system's own facts before anything is booked.

Every id must exist in the inventory, routes and dates must match the plan, totals must add up,
and the whole must fit the traveller's budget. Facts an LLM planner proposed (flight numbers, hotel,
prices) are checked the same way; wrong ones send the trip back to the planner with the findings
(bounded re-planning), other failures are business failures with reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from itinerant.errors import BusinessFailure
from itinerant.runtime.agent import Agent, HandlerContext
from itinerant.wire.slip import Slip
from services.contracts.trip import (
    FlightBooking,
    FlightQuote,
    HotelBooking,
    HotelQuote,
    Plan,
    Proposal,
    Replan,
    TripDocument,
    Validation,
    total_of,
)
from services.flows import REPLAN
from services.inventory import catalogue
from services.settings import travel_settings

agent = Agent("validator", "Checks an itinerary against inventory facts and the budget.")


@dataclass
class Findings:
    checks: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)  # the world says no: not fixable by a re-plan
    facts: list[str] = field(default_factory=list)  # the planner's (LLM's) facts are wrong
    warnings: list[str] = field(default_factory=list)  # not wrong, but a human should look


@agent.handler()
async def validate(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    """Before booking it checks the quotes; after booking (if routed there), the bookings. Wrong
    facts from the planner go back to the planner with the findings, at most
    ``ITINERANT_MAX_REPLANS`` times (counted from the slip, so a payload cannot reset it)."""
    found = assess(trip)
    if found.facts and not found.issues:
        replans = replans_so_far(ctx.slip)
        if replans < travel_settings().max_replans:
            ctx.log.info("re-planning (%d): %s", replans + 1, "; ".join(found.facts))
            ctx.reroute([REPLAN])
            return trip.model_copy(
                update={
                    "replan": Replan(attempt=replans + 1, issues=found.facts),
                    "validation": Validation(ok=False, checks=found.checks, issues=found.facts),
                }
            )
        found.issues += found.facts
        found.issues.append(f"still wrong after {replans} re-plan(s)")
    if found.issues:
        raise BusinessFailure(
            "itinerary failed validation: " + "; ".join(found.issues), reason="validation_failed"
        )
    return trip.model_copy(
        update={
            "validation": Validation(ok=True, checks=found.checks, warnings=found.warnings),
        }
    )


def replans_so_far(slip: Slip) -> int:
    return max(sum(1 for v in slip.visited if v.agent == "planner" and not v.skipped) - 1, 0)


def assess(trip: TripDocument) -> Findings:
    plan = trip.require_plan()
    found = Findings()
    booked = trip.flight is not None or trip.hotel is not None
    flight: FlightBooking | FlightQuote | None = trip.flight if booked else trip.flight_quote
    what = "booked" if booked else "quoted"
    if flight is None:
        found.issues.append(f"no flight {what}")
    else:
        _check_flights(plan, flight, found.checks, found.issues)
    if plan.needs_hotel:
        if booked and trip.hotel is not None:
            _check_hotel(plan, trip.hotel, found.checks, found.issues)
        elif not booked and trip.hotel_quote is not None:
            _check_hotel_quote(plan, trip.hotel_quote, found.checks, found.issues)
        else:
            found.issues.append(f"no hotel {what} for a stay of more than a day")
    total = total_of(trip) if booked else quoted_total(trip)
    if plan.budget_usd is not None:
        if total > plan.budget_usd:
            found.issues.append(f"total ${total:.2f} is over the budget of ${plan.budget_usd:.2f}")
        else:
            found.checks.append(f"total ${total:.2f} within budget ${plan.budget_usd:.2f}")
    if plan.proposal is not None and not booked:
        check_proposal(plan, plan.proposal, trip, found)
    return found


def quoted_total(trip: TripDocument) -> float:
    flight = trip.flight_quote.total_usd if trip.flight_quote else 0.0
    hotel = trip.hotel_quote.total_usd if trip.hotel_quote else 0.0
    return round(flight + hotel, 2)


def check_proposal(plan: Plan, proposal: Proposal, trip: TripDocument, found: Findings) -> None:
    """Every fact the planner proposed, against the inventory and what the searches quoted."""
    flights = catalogue().flights
    quote = trip.flight_quote
    before = len(found.facts)
    legs = (
        (
            "outbound",
            proposal.outbound_flight,
            plan.origin,
            plan.destination,
            quote and quote.outbound,
        ),
        ("return", proposal.return_flight, plan.destination, plan.origin, quote and quote.inbound),
    )
    for name, flight_no, origin, destination, quoted in legs:
        if flight_no is None:
            continue
        known = flights.get(flight_no)
        if known is None:
            found.facts.append(f"{name} flight {flight_no} does not exist")
        elif (known.origin, known.destination) != (origin, destination):
            found.facts.append(
                f"{name} flight {flight_no} flies {known.origin}-{known.destination}, "
                f"not {origin}-{destination}"
            )
        elif quoted and quoted.flight_no != flight_no:
            found.facts.append(f"the {name} flight is {quoted.flight_no}, not {flight_no}")
    if proposal.hotel_id is not None:
        hotel = catalogue().hotels.get(proposal.hotel_id)
        if hotel is None:
            found.facts.append(f"hotel {proposal.hotel_id} does not exist")
        elif hotel.city != plan.destination:
            found.facts.append(
                f"hotel {proposal.hotel_id} is in {hotel.city}, not {plan.destination}"
            )
        elif trip.hotel_quote and trip.hotel_quote.hotel_id != proposal.hotel_id:
            found.warnings.append(
                f"the planner proposed hotel {proposal.hotel_id}; {trip.hotel_quote.hotel_id} "
                f"({trip.hotel_quote.hotel_name}) is the one quoted and would be booked"
            )
    prices = (
        ("flights", proposal.flights_usd, quote.total_usd if quote else None),
        ("hotel", proposal.hotel_usd, trip.hotel_quote.total_usd if trip.hotel_quote else None),
        ("total", proposal.total_usd, quoted_total(trip)),
    )
    for name, proposed, actual in prices:
        if proposed is not None and actual is not None and abs(proposed - actual) > 0.005:
            found.facts.append(f"the {name} price is ${actual:.2f}, not ${proposed:.2f}")
    parts = (proposal.flights_usd, proposal.hotel_usd)
    if proposal.total_usd is not None and None not in parts:
        added = round(sum(p for p in parts if p is not None), 2)
        if abs(added - proposal.total_usd) > 0.005:
            found.facts.append(
                f"the proposed total ${proposal.total_usd:.2f} is not the sum of its parts "
                f"${added:.2f}"
            )
    if len(found.facts) == before:
        found.checks.append("the planner's proposed facts match the inventory and the quotes")


def _check_flights(
    plan: Plan, booking: FlightBooking | FlightQuote, checks: list[str], issues: list[str]
) -> None:
    flights = catalogue().flights
    expected = (
        (booking.outbound, plan.origin, plan.destination, plan.depart_date),
        (booking.inbound, plan.destination, plan.origin, plan.return_date),
    )
    for leg, origin, destination, day in expected:
        known = flights.get(leg.flight_no)
        if known is None:
            issues.append(f"flight {leg.flight_no} does not exist")
            continue
        if (known.origin, known.destination) != (origin, destination):
            issues.append(
                f"flight {leg.flight_no} flies {known.origin}-{known.destination}, "
                f"not {origin}-{destination}"
            )
        if leg.date != day:
            issues.append(f"flight {leg.flight_no} is on {leg.date}, the plan says {day}")
        price = round(known.price_usd * booking.seats, 2)
        if abs(leg.price_usd - price) > 0.005:
            issues.append(f"flight {leg.flight_no} costs ${price:.2f}, not ${leg.price_usd:.2f}")
    legs_total = round(booking.outbound.price_usd + booking.inbound.price_usd, 2)
    if abs(legs_total - booking.total_usd) > 0.005:
        issues.append(f"flight total ${booking.total_usd:.2f} is not the sum ${legs_total:.2f}")
    if not issues:
        checks.append(f"flights {booking.outbound.flight_no}/{booking.inbound.flight_no} verified")


def _check_hotel(plan: Plan, booking: HotelBooking, checks: list[str], issues: list[str]) -> None:
    known = catalogue().hotels.get(booking.hotel_id)
    if known is None:
        issues.append(f"hotel {booking.hotel_id} does not exist")
        return
    if known.city != plan.destination:
        issues.append(f"hotel {booking.hotel_id} is in {known.city}, not {plan.destination}")
    nights = (plan.return_date - plan.depart_date).days
    if (booking.check_in, booking.check_out, booking.nights) != (
        plan.depart_date,
        plan.return_date,
        nights,
    ):
        issues.append("hotel dates do not match the trip")
    expected = round(known.nightly_usd * nights * booking.rooms, 2)
    if abs(expected - booking.total_usd) > 0.005:
        issues.append(f"hotel total ${booking.total_usd:.2f} should be ${expected:.2f}")
    if len(issues) == 0:
        checks.append(f"hotel {booking.hotel_id} verified")


def _check_hotel_quote(plan: Plan, quote: HotelQuote, checks: list[str], issues: list[str]) -> None:
    known = catalogue().hotels.get(quote.hotel_id)
    if known is None:
        issues.append(f"hotel {quote.hotel_id} does not exist")
        return
    if known.city != plan.destination:
        issues.append(f"hotel {quote.hotel_id} is in {known.city}, not {plan.destination}")
    nights = (plan.return_date - plan.depart_date).days
    if quote.nights != nights:
        issues.append(f"hotel quote is for {quote.nights} night(s), the trip has {nights}")
    expected = round(known.nightly_usd * nights * quote.rooms, 2)
    if abs(expected - quote.total_usd) > 0.005:
        issues.append(f"hotel total ${quote.total_usd:.2f} should be ${expected:.2f}")
    else:
        checks.append(f"hotel {quote.hotel_id} quote verified")
