"""Flights: books the outbound and return flights of a plan; cancels them as compensation."""

from __future__ import annotations

from datetime import date

from itinerant.errors import BusinessFailure
from itinerant.runtime.agent import Agent, HandlerContext
from itinerant.wire.slip import APPROVAL_VISIT
from services.contracts.trip import FlightBooking, FlightLeg, FlightQuote, Refund, TripDocument
from services.inventory import Flight, catalogue
from services.inventory import search as inventory
from services.settings import travel_settings

from .faults import inject_inventory_faults

BOOKINGS = """
CREATE TABLE IF NOT EXISTS flight_bookings (
    booking_id      TEXT NOT NULL,
    leg             TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    saga_id         TEXT NOT NULL,
    flight_no       TEXT NOT NULL,
    day             TEXT NOT NULL,
    seats           INTEGER NOT NULL,
    status          TEXT NOT NULL DEFAULT 'held',
    PRIMARY KEY (booking_id, leg),
    UNIQUE (idempotency_key, leg)
);
CREATE INDEX IF NOT EXISTS flight_bookings_by_flight ON flight_bookings(flight_no, day, status);
"""
#: Whose booking it is: the customer identity of the request that made it (a refund by anyone
#: else is refused, operators excepted).
OWNERS = """
CREATE TABLE IF NOT EXISTS flight_booking_owners (
    booking_id TEXT PRIMARY KEY,
    customer   TEXT NOT NULL
);
"""

agent = Agent("flights", "Books flights against the inventory.", migrations=(BOOKINGS, OWNERS))
inventory.declare(agent)


@agent.handler("search")
async def search(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    """Find the flights of the plan with enough free seats (through the inventory MCP server
    when there is one); holds nothing."""
    plan = trip.require_plan()
    with ctx.guard("inventory"):
        inject_inventory_faults(ctx)
    legs = []
    for flight, day in (
        (await _searched(ctx, plan.origin, plan.destination), plan.depart_date),
        (await _searched(ctx, plan.destination, plan.origin), plan.return_date),
    ):
        free = flight.seats - _seats_taken(ctx, flight, day)
        if free < plan.travellers:
            raise BusinessFailure(
                f"flight {flight.flight_no} on {day} has {free} seat(s) left", reason="sold_out"
            )
        legs.append(_leg(flight, day, plan.travellers))
    quote = FlightQuote(
        outbound=legs[0],
        inbound=legs[1],
        seats=plan.travellers,
        total_usd=round(sum(leg.price_usd for leg in legs), 2),
    )
    return trip.model_copy(update={"flight_quote": quote})


@agent.handler("book", side_effects=True, requires=("validator", APPROVAL_VISIT))
async def book(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    plan = trip.require_plan()
    with ctx.guard("inventory"):
        inject_inventory_faults(ctx)
    outbound = _flight(plan.origin, plan.destination)
    inbound = _flight(plan.destination, plan.origin)
    booking_id = f"FB-{ctx.idempotency_key[:8].upper()}"
    ctx.db.execute(
        "INSERT INTO flight_booking_owners(booking_id, customer) VALUES (?, ?) "
        "ON CONFLICT DO NOTHING",
        (booking_id, ctx.customer),
    )
    for leg, flight, day in (
        ("out", outbound, plan.depart_date),
        ("back", inbound, plan.return_date),
    ):
        _hold(ctx, booking_id, leg, flight, day, plan.travellers)
    legs = [
        _leg(f, day, plan.travellers)
        for f, day in ((outbound, plan.depart_date), (inbound, plan.return_date))
    ]
    booking = FlightBooking(
        booking_id=booking_id,
        outbound=legs[0],
        inbound=legs[1],
        seats=plan.travellers,
        total_usd=round(sum(leg.price_usd for leg in legs), 2),
    )
    ctx.log.info("booked flights %s for saga %s", booking_id, ctx.saga_id)
    return trip.model_copy(update={"flight": booking})


@agent.compensation("book")
async def cancel(trip: TripDocument, ctx: HandlerContext) -> None:
    if trip.flight is None:
        return
    ctx.db.execute(
        "UPDATE flight_bookings SET status = 'cancelled' WHERE booking_id = ?",
        (trip.flight.booking_id,),
    )
    ctx.log.info("cancelled flights %s", trip.flight.booking_id)


@agent.handler("quote_refund")
async def quote_refund(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    """What a refund would pay back, refunding nothing: the approval policy needs the amount
    before the refund runs."""
    ref, amount = _refundable(trip, ctx)
    return trip.model_copy(
        update={"refund": Refund(booking_ref=ref, amount_usd=amount, status="quoted")}
    )


@agent.handler("refund", side_effects=True, requires=(APPROVAL_VISIT,))
async def refund(trip: TripDocument, ctx: HandlerContext) -> TripDocument:
    """Refund a held booking by its reference (both legs)."""
    ref, amount = _refundable(trip, ctx)
    approved = any(v.agent == APPROVAL_VISIT and not v.skipped for v in ctx.slip.visited)
    threshold = travel_settings().approval_threshold_usd
    if amount > threshold and not approved:
        # The coordinator's approval gate decides; this is the last line of defence against a
        # route that skipped it.
        raise BusinessFailure(
            f"a refund of ${amount:.2f} is over ${threshold:.2f} and was not approved",
            reason="approval_required",
        )
    if trip.refund is not None and trip.refund.amount_usd + 0.005 < amount:
        raise BusinessFailure(
            f"booking {ref} would refund ${amount:.2f}, more than the ${trip.refund.amount_usd:.2f}"
            " quoted (and approved)",
            reason="refund_changed",
        )
    ctx.db.execute(
        "UPDATE flight_bookings SET status = 'refunded' WHERE booking_id = ? AND status = 'held'",
        (ref,),
    )
    operator = _operator_for_another(ref, ctx)
    ctx.log.info(
        "refunded %s: $%.2f%s", ref, amount, f" by operator {operator}" if operator else ""
    )
    refund = Refund(booking_ref=ref, amount_usd=amount, status="refunded", operator=operator)
    return trip.model_copy(update={"refund": refund})


def _refundable(trip: TripDocument, ctx: HandlerContext) -> tuple[str, float]:
    ref = trip.request.booking_ref
    if not ref:
        raise BusinessFailure("a refund needs the booking_ref to refund", reason="invalid_request")
    rows = ctx.db.execute(
        "SELECT flight_no, seats, status FROM flight_bookings WHERE booking_id = ?", (ref,)
    ).fetchall()
    if not rows or not _may_act_on(ref, ctx):
        # The same answer for someone else's booking as for none: no oracle of references.
        raise BusinessFailure(f"no booking {ref!r} of yours to refund", reason="unknown_booking")
    if any(r[2] == "refunded" for r in rows) and not any(r[2] == "held" for r in rows):
        raise BusinessFailure(f"booking {ref} was already refunded", reason="already_refunded")
    if not any(r[2] == "held" for r in rows):
        raise BusinessFailure(
            f"booking {ref} is cancelled; nothing to refund", reason="not_refundable"
        )
    flights = catalogue().flights
    amount = round(sum(flights[r[0]].price_usd * r[1] for r in rows if r[0] in flights), 2)
    return ref, amount


def _owner(ref: str, ctx: HandlerContext) -> str | None:
    row = ctx.db.execute(
        "SELECT customer FROM flight_booking_owners WHERE booking_id = ?", (ref,)
    ).fetchone()
    return str(row[0]) if row else None


def _may_act_on(ref: str, ctx: HandlerContext) -> bool:
    """A booking is its customer's; operators may act on anyone's (and it is recorded)."""
    return _owner(ref, ctx) == ctx.customer or ctx.customer_is_operator


def _operator_for_another(ref: str, ctx: HandlerContext) -> str | None:
    return ctx.customer if ctx.customer_is_operator and _owner(ref, ctx) != ctx.customer else None


def _leg(flight: Flight, day: date, travellers: int) -> FlightLeg:
    return FlightLeg(
        flight_no=flight.flight_no,
        origin=flight.origin,
        destination=flight.destination,
        date=day,
        price_usd=flight.price_usd * travellers,
    )


def _seats_taken(ctx: HandlerContext, flight: Flight, day: date) -> int:
    taken: int = ctx.db.execute(
        "SELECT COALESCE(SUM(seats), 0) FROM flight_bookings "
        "WHERE flight_no = ? AND day = ? AND status = 'held' AND idempotency_key != ?",
        (flight.flight_no, day.isoformat(), ctx.idempotency_key),
    ).fetchone()[0]
    return taken


async def _searched(ctx: HandlerContext, origin: str, destination: str) -> Flight:
    found = await inventory.flights(ctx, origin, destination)
    if not found:
        raise BusinessFailure(f"no flight from {origin} to {destination}", reason="no_route")
    return found[0]


def _flight(origin: str, destination: str) -> Flight:
    flight = catalogue().flight_on_route(origin, destination)
    if flight is None:
        raise BusinessFailure(f"no flight from {origin} to {destination}", reason="no_route")
    return flight


def _hold(
    ctx: HandlerContext, booking_id: str, leg: str, flight: Flight, day: date, seats: int
) -> None:
    """Hold seats, keyed by the step's idempotency key: a repeat holds nothing new."""
    taken = _seats_taken(ctx, flight, day)
    if taken + seats > flight.seats:
        raise BusinessFailure(
            f"flight {flight.flight_no} on {day} is sold out ({flight.seats - taken} seats left)",
            reason="sold_out",
        )
    ctx.db.execute(
        "INSERT INTO flight_bookings"
        "(booking_id, leg, idempotency_key, saga_id, flight_no, day, seats) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            booking_id,
            leg,
            ctx.idempotency_key,
            ctx.saga_id,
            flight.flight_no,
            day.isoformat(),
            seats,
        ),
    )
