"""Planner (free-text reading, content-based routing) and validator (facts, prices, budget)."""

from __future__ import annotations

from datetime import date
from typing import cast

import pytest

from itinerant import Approval
from itinerant.errors import BusinessFailure
from itinerant.runtime.agent import HandlerContext
from itinerant.wire.conditions import evaluate
from itinerant.wire.slip import ParallelGroup, Step
from services.contracts.trip import FlightBooking, FlightLeg, Plan, TripDocument, TripRequest
from services.flows import NEEDS_HOTEL
from services.inventory import catalogue
from services.planner.agent import to_plan, trip_flow
from services.planner.understanding import PlanDraft, read_free_text
from services.validator.agent import validate

NO_CTX = cast(HandlerContext, None)  # the validator uses nothing from its context


def test_reads_cities_dates_travellers_and_budget() -> None:
    draft = read_free_text(
        "A long weekend in Rome from London, 2027-04-09 to 2027-04-12, 2 travellers, "
        "budget 3000 USD"
    )
    assert draft == PlanDraft(
        flow="trip",
        origin="LHR",
        destination="FCO",
        depart_date=date(2027, 4, 9),
        return_date=date(2027, 4, 12),
        travellers=2,
        budget_usd=3000.0,
    )


def test_reads_codes_and_to_phrasing_and_thousands() -> None:
    draft = read_free_text("from AMS to Berlin on 2027-05-02, back 2027-05-04, up to $1,250.50")
    assert (draft.origin, draft.destination) == ("AMS", "BER")
    assert (draft.depart_date, draft.return_date) == (date(2027, 5, 2), date(2027, 5, 4))
    assert draft.budget_usd == 1250.5
    assert draft.travellers is None


def test_one_date_is_a_day_trip() -> None:
    draft = read_free_text("visit Paris from Madrid 2027-06-01")
    assert draft.destination == "CDG" and draft.origin == "MAD"
    assert draft.depart_date == draft.return_date == date(2027, 6, 1)


def test_refund_and_unsupported_flows() -> None:
    assert read_free_text("I want a refund for booking FB-1").flow == "refund"
    unsupported = read_free_text("Please order me a pizza")
    assert unsupported.flow == "unsupported"
    assert unsupported.note


def test_text_with_a_city_but_no_dates_is_a_trip_missing_dates() -> None:
    draft = read_free_text("take me to Oslo")
    assert draft.flow == "trip"
    assert draft.destination == "OSL"
    assert draft.depart_date is None and draft.return_date is None


def plan(depart: date, back: date, **changes: object) -> Plan:
    base: dict[str, object] = {
        "flow": "trip",
        "origin": "MAD",
        "destination": "LIS",
        "depart_date": depart,
        "return_date": back,
        "travellers": 2,
        "planned_by": "test",
        "needs_hotel": back > depart,
    }
    return Plan.model_validate({**base, **changes})


def test_trip_flow_searches_in_parallel_then_books_with_hotel_filters() -> None:
    route = list(trip_flow().steps)
    assert route[0] == ParallelGroup(
        parallel=[
            Step(agent="flights", action="search"),
            Step(agent="hotels", action="search", when="plan.needs_hotel"),
        ],
        join="all",
        timeout_s=20.0,
    )
    # Validation and the approval gate come before anything is booked.
    assert route[1:] == [
        Step(agent="validator"),
        Approval(),
        Step(agent="flights", action="book"),
        Step(agent="hotels", action="book", when="plan.needs_hotel"),
        Step(agent="notifier"),
    ]
    sequential = list(trip_flow(parallel=False).steps)
    assert [s.agent if isinstance(s, Step) else "gate" for s in sequential] == [
        "flights",
        "hotels",
        "validator",
        "gate",
        "flights",
        "hotels",
        "notifier",
    ]


def test_hotel_filter_skips_a_same_day_trip_only() -> None:
    day = date(2027, 6, 1)
    same_day = plan(day, day).model_dump(mode="json")
    stay = plan(day, date(2027, 6, 3)).model_dump(mode="json")
    assert evaluate(NEEDS_HOTEL, {"plan": same_day}) is False
    assert evaluate(NEEDS_HOTEL, {"plan": stay}) is True


def request() -> TripRequest:
    return TripRequest.model_validate({"traveller": {"name": "A"}, "text": "x"})


def test_to_plan_sets_needs_hotel_and_rejects_gaps() -> None:
    day = date(2027, 6, 1)
    draft = PlanDraft(
        flow="trip", origin="MAD", destination="LIS", depart_date=day, return_date=day
    )
    assert to_plan(draft, request(), planned_by="t").needs_hotel is False
    longer = draft.model_copy(update={"return_date": date(2027, 6, 2)})
    assert to_plan(longer, request(), planned_by="t").needs_hotel is True
    with pytest.raises(BusinessFailure) as info:
        to_plan(draft.model_copy(update={"depart_date": None}), request(), planned_by="t")
    assert info.value.reason == "incomplete_request"
    assert "depart_date" in str(info.value)
    with pytest.raises(BusinessFailure) as info:
        to_plan(draft.model_copy(update={"destination": "NYC"}), request(), planned_by="t")
    assert info.value.reason == "unknown_city"


# --- validator --------------------------------------------------------------------------------


def leg(flight_no: str, day: date, seats: int, price: float | None = None) -> FlightLeg:
    known = catalogue().flights.get(flight_no)
    origin, destination = (known.origin, known.destination) if known else ("MAD", "LIS")
    unit = known.price_usd if known else 100.0
    return FlightLeg(
        flight_no=flight_no,
        origin=origin,
        destination=destination,
        date=day,
        price_usd=price if price is not None else unit * seats,
    )


def day_trip(outbound: FlightLeg, inbound: FlightLeg, budget: float | None) -> TripDocument:
    day = date(2027, 6, 1)
    trip_plan = plan(day, day, budget_usd=budget)
    booking = FlightBooking(
        booking_id="FB-1",
        outbound=outbound,
        inbound=inbound,
        seats=2,
        total_usd=round(outbound.price_usd + inbound.price_usd, 2),
    )
    return TripDocument(request=request(), plan=trip_plan, flight=booking)


def flight_no(origin: str, destination: str) -> str:
    found = catalogue().flight_on_route(origin, destination)
    assert found is not None
    return found.flight_no


async def test_validator_accepts_a_correct_itinerary() -> None:
    day = date(2027, 6, 1)
    trip = day_trip(
        leg(flight_no("MAD", "LIS"), day, 2), leg(flight_no("LIS", "MAD"), day, 2), None
    )
    checked = await validate(trip, NO_CTX)
    assert isinstance(checked, TripDocument)
    assert checked.validation is not None and checked.validation.ok
    assert any("verified" in c for c in checked.validation.checks)


async def test_validator_lists_every_issue() -> None:
    day = date(2027, 6, 1)
    back_no = flight_no("LIS", "MAD")
    real_price = catalogue().flights[back_no].price_usd * 2
    trip = day_trip(
        leg("XX999", day, 2, price=100.0),
        leg(back_no, day, 2, price=real_price + 50),
        budget=10.0,
    )
    with pytest.raises(BusinessFailure) as info:
        await validate(trip, NO_CTX)
    text = str(info.value)
    assert info.value.reason == "validation_failed"
    assert "flight XX999 does not exist" in text
    assert f"flight {back_no} costs ${real_price:.2f}, not ${real_price + 50:.2f}" in text
    assert "over the budget of $10.00" in text
    assert text.count(";") >= 2


async def test_validator_requires_a_hotel_for_a_stay() -> None:
    day = date(2027, 6, 1)
    trip = day_trip(
        leg(flight_no("MAD", "LIS"), day, 2), leg(flight_no("LIS", "MAD"), day, 2), None
    )
    trip = trip.model_copy(update={"plan": plan(day, date(2027, 6, 4))})
    with pytest.raises(BusinessFailure) as info:
        await validate(trip, NO_CTX)
    assert "no hotel booked" in str(info.value)
    assert "is on 2027-06-01, the plan says 2027-06-04" in str(info.value)
