"""Validator: checks the assembled itinerary against the system's own facts before anyone is told.

Every id must exist in the inventory, routes and dates must match the plan, totals must add up,
and the whole must fit the traveller's budget. A failed check is a business failure with reasons.
"""

from __future__ import annotations

from services.contracts.trip import FlightBooking, HotelBooking, Plan, TripDocument, Validation
from services.inventory import catalogue
from services.runtime.agent import Agent, HandlerContext
from services.runtime.errors import BusinessFailure

agent = Agent("validator", "Checks an itinerary against inventory facts and the budget.")


@agent.handler()
async def validate(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    plan = trip.require_plan()
    checks: list[str] = []
    issues: list[str] = []
    if trip.flight is None:
        issues.append("no flight booked")
    else:
        _check_flights(plan, trip.flight, checks, issues)
    if plan.needs_hotel:
        if trip.hotel is None:
            issues.append("no hotel booked for a stay of more than a day")
        else:
            _check_hotel(plan, trip.hotel, checks, issues)
    total = total_of(trip)
    if plan.budget_usd is not None:
        if total > plan.budget_usd:
            issues.append(f"total ${total:.2f} is over the budget of ${plan.budget_usd:.2f}")
        else:
            checks.append(f"total ${total:.2f} within budget ${plan.budget_usd:.2f}")
    if issues:
        raise BusinessFailure(
            "itinerary failed validation: " + "; ".join(issues), reason="validation_failed"
        )
    return trip.model_copy(update={"validation": Validation(ok=True, checks=checks)})


def total_of(trip: TripDocument) -> float:
    flight = trip.flight.total_usd if trip.flight else 0.0
    hotel = trip.hotel.total_usd if trip.hotel else 0.0
    return round(flight + hotel, 2)


def _check_flights(
    plan: Plan, booking: FlightBooking, checks: list[str], issues: list[str]
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
