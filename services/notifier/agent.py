"""Notifier: renders the confirmation the traveller receives."""

from __future__ import annotations

from itinerant.runtime.agent import Agent, HandlerContext
from services.contracts.trip import Confirmation, TripDocument, total_of
from services.inventory import catalogue

agent = Agent("notifier", "Renders the booking confirmation.")


@agent.handler()
async def notify(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    if trip.refund is not None:
        return trip.model_copy(update={"confirmation": refund_confirmation(trip, ctx.saga_id)})
    plan = trip.require_plan()
    cities = catalogue().cities
    lines = [
        f"Dear {trip.request.traveller.name},",
        f"your trip {cities[plan.origin]} -> {cities[plan.destination]} "
        f"({plan.depart_date} to {plan.return_date}, {plan.travellers} traveller(s)) is booked.",
    ]
    if trip.flight:
        lines.append(
            f"Flights {trip.flight.outbound.flight_no} and {trip.flight.inbound.flight_no}, "
            f"booking {trip.flight.booking_id}: ${trip.flight.total_usd:.2f}."
        )
    if trip.hotel:
        lines.append(
            f"{trip.hotel.hotel_name}, {trip.hotel.nights} night(s), {trip.hotel.rooms} room(s), "
            f"booking {trip.hotel.booking_id}: ${trip.hotel.total_usd:.2f}."
        )
    total = total_of(trip)
    lines.append(f"Total: ${total:.2f}.")
    confirmation = Confirmation(
        reference=f"IT-{ctx.saga_id[:8].upper()}", total_usd=total, text="\n".join(lines)
    )
    return trip.model_copy(update={"confirmation": confirmation})


def refund_confirmation(trip: TripDocument, saga_id: str) -> Confirmation:
    assert trip.refund is not None
    text = (
        f"Dear {trip.request.traveller.name},\n"
        f"booking {trip.refund.booking_ref} is refunded: ${trip.refund.amount_usd:.2f}."
    )
    return Confirmation(
        reference=f"IT-{saga_id[:8].upper()}", total_usd=-trip.refund.amount_usd, text=text
    )
