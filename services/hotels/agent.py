"""Hotels: books rooms in the destination for the nights of the trip; cancels as compensation."""

from __future__ import annotations

from itinerant.errors import BusinessFailure
from itinerant.runtime.agent import Agent, HandlerContext
from itinerant.wire.slip import APPROVAL_VISIT
from services.contracts.trip import HotelBooking, HotelQuote, TripDocument
from services.inventory import Hotel, catalogue
from services.inventory import search as inventory

BOOKINGS = """
CREATE TABLE IF NOT EXISTS hotel_bookings (
    booking_id      TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    saga_id         TEXT NOT NULL,
    hotel_id        TEXT NOT NULL,
    check_in        TEXT NOT NULL,
    check_out       TEXT NOT NULL,
    rooms           INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'held'
);
CREATE INDEX IF NOT EXISTS hotel_bookings_by_hotel ON hotel_bookings(hotel_id, status);
"""

agent = Agent("hotels", "Books hotel rooms against the inventory.", migrations=(BOOKINGS,))
inventory.declare(agent)


def rooms_for(travellers: int) -> int:
    return (travellers + 1) // 2


@agent.handler("search")
async def search(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    """Quote the cheapest hotel of the destination from the catalogue (through the inventory MCP
    server when there is one). Rooms are not held, and availability is confirmed on booking (as
    with real hotel search APIs)."""
    plan = trip.require_plan()
    hotels = await inventory.hotels(ctx, plan.destination)
    if not hotels:
        raise BusinessFailure(f"no hotels in {plan.destination}", reason="no_hotels")
    hotel = hotels[0]
    rooms = rooms_for(plan.travellers)
    nights = (plan.return_date - plan.depart_date).days
    quote = HotelQuote(
        hotel_id=hotel.hotel_id,
        hotel_name=hotel.name,
        city=hotel.city,
        nights=nights,
        rooms=rooms,
        total_usd=round(hotel.nightly_usd * nights * rooms, 2),
    )
    return trip.model_copy(update={"hotel_quote": quote})


@agent.handler("book", side_effects=True, requires=("validator", APPROVAL_VISIT))
async def book(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    plan = trip.require_plan()
    rooms = rooms_for(plan.travellers)
    hotel = _first_with_rooms(
        ctx, plan.destination, rooms, plan.depart_date.isoformat(), plan.return_date.isoformat()
    )
    booking_id = f"HB-{ctx.idempotency_key[:8].upper()}"
    ctx.db.execute(
        "INSERT INTO hotel_bookings"
        "(booking_id, idempotency_key, saga_id, hotel_id, check_in, check_out, rooms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            booking_id,
            ctx.idempotency_key,
            ctx.saga_id,
            hotel.hotel_id,
            plan.depart_date.isoformat(),
            plan.return_date.isoformat(),
            rooms,
        ),
    )
    nights = (plan.return_date - plan.depart_date).days
    booking = HotelBooking(
        booking_id=booking_id,
        hotel_id=hotel.hotel_id,
        hotel_name=hotel.name,
        city=hotel.city,
        check_in=plan.depart_date,
        check_out=plan.return_date,
        nights=nights,
        rooms=rooms,
        total_usd=round(hotel.nightly_usd * nights * rooms, 2),
    )
    ctx.log.info("booked hotel %s for saga %s", booking_id, ctx.saga_id)
    return trip.model_copy(update={"hotel": booking})


@agent.compensation("book")
async def cancel(trip: TripDocument, ctx: HandlerContext) -> None:
    if trip.hotel is None:
        return
    ctx.db.execute(
        "UPDATE hotel_bookings SET status = 'cancelled' WHERE booking_id = ?",
        (trip.hotel.booking_id,),
    )
    ctx.log.info("cancelled hotel %s", trip.hotel.booking_id)


def _first_with_rooms(
    ctx: HandlerContext, city: str, rooms: int, check_in: str, check_out: str
) -> Hotel:
    """The cheapest hotel with enough rooms free on every night of the stay."""
    for hotel in catalogue().hotels_in(city):
        taken = ctx.db.execute(
            "SELECT COALESCE(SUM(rooms), 0) FROM hotel_bookings WHERE hotel_id = ? "
            "AND status = 'held' AND check_in < ? AND check_out > ? AND idempotency_key != ?",
            (hotel.hotel_id, check_out, check_in, ctx.idempotency_key),
        ).fetchone()[0]
        if taken + rooms <= hotel.rooms:
            return hotel
    name = catalogue().cities.get(city, city)
    raise BusinessFailure(
        f"no hotel in {name} has {rooms} room(s) free from {check_in} to {check_out}",
        reason="sold_out",
    )
