"""The travel request and the trip document that flows through the agents, step by step.

Every message type carries its version in its name (``itinerant.request.v1``); JSON Schema for each
model is exported to ``schemas/`` (``itinerant schemas export``) and checked by a test.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from itinerant import Request

IATA = r"^[A-Z]{3}$"


class Traveller(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    email: str | None = Field(default=None, max_length=200)


class TripRequest(Request):
    """``itinerant.request.v1``: what a user publishes to the requests topic (with the id and
    budget fields every request has, from :class:`itinerant.Request`)."""

    kind: Literal["trip", "refund"] | None = Field(
        default=None, description="omit to let the planner decide from the content"
    )
    traveller: Traveller
    text: str | None = Field(default=None, max_length=2000, description="free-text ask")
    origin: str | None = Field(default=None, pattern=IATA)
    destination: str | None = Field(default=None, pattern=IATA)
    depart_date: date | None = None
    return_date: date | None = None
    travellers: int = Field(default=1, ge=1, le=9)
    budget_usd: float | None = Field(default=None, gt=0)
    booking_ref: str | None = Field(default=None, max_length=64, description="for refunds")

    @model_validator(mode="after")
    def _enough_to_plan(self) -> TripRequest:
        structured = (self.origin, self.destination, self.depart_date, self.return_date)
        if self.text is None and self.kind != "refund" and not all(structured):
            missing = [
                name
                for name, value in zip(
                    ("origin", "destination", "depart_date", "return_date"), structured, strict=True
                )
                if not value
            ]
            raise ValueError(f"give either 'text' or all of {missing} (missing)")
        if self.depart_date and self.return_date and self.return_date < self.depart_date:
            raise ValueError("return_date is before depart_date")
        return self


class Proposal(BaseModel):
    """Facts an LLM planner proposes (flight numbers, hotel, prices). Nothing is booked from them:
    the validator checks each against the inventory and the quotes, and a wrong one is re-planned.
    """

    model_config = ConfigDict(extra="forbid")

    outbound_flight: str | None = Field(default=None, max_length=16)
    return_flight: str | None = Field(default=None, max_length=16)
    hotel_id: str | None = Field(default=None, max_length=32)
    flights_usd: float | None = Field(default=None, description="both legs, all travellers")
    hotel_usd: float | None = Field(default=None, description="every night and room")
    total_usd: float | None = None


class Replan(BaseModel):
    """Why the validator sent the trip back to the planner (fed to the next prompt)."""

    model_config = ConfigDict(extra="forbid")

    attempt: int = Field(ge=1)
    issues: list[str] = Field(min_length=1)


class Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: Literal["trip", "refund"]
    origin: str = Field(pattern=IATA)
    destination: str = Field(pattern=IATA)
    depart_date: date
    return_date: date
    travellers: int = Field(ge=1, le=9)
    budget_usd: float | None = None
    needs_hotel: bool = True
    planned_by: str
    proposal: Proposal | None = None


class FlightLeg(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flight_no: str
    origin: str
    destination: str
    date: date
    price_usd: float


class FlightQuote(BaseModel):
    """What flights.search found: bookable now, held by nobody."""

    model_config = ConfigDict(extra="forbid")

    outbound: FlightLeg
    inbound: FlightLeg
    seats: int
    total_usd: float


class HotelQuote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hotel_id: str
    hotel_name: str
    city: str
    nights: int
    rooms: int
    total_usd: float


class Refund(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booking_ref: str
    amount_usd: float
    status: Literal["quoted", "refunded"]
    operator: str | None = Field(
        default=None, description="the operator who refunded another customer's booking"
    )


class FlightBooking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booking_id: str
    outbound: FlightLeg
    inbound: FlightLeg
    seats: int
    total_usd: float


class HotelBooking(BaseModel):
    model_config = ConfigDict(extra="forbid")

    booking_id: str
    hotel_id: str
    hotel_name: str
    city: str
    check_in: date
    check_out: date
    nights: int
    rooms: int
    total_usd: float


class Validation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    checks: list[str] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list, description="not wrong, but a human should look (approval)"
    )


class Confirmation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: str
    total_usd: float
    text: str


class TripDocument(BaseModel):
    """``itinerant.<agent>.<action>.v1`` payload: the trip as far as it has got."""

    model_config = ConfigDict(extra="forbid")

    request: TripRequest
    plan: Plan | None = None
    flight_quote: FlightQuote | None = None
    hotel_quote: HotelQuote | None = None
    flight: FlightBooking | None = None
    hotel: HotelBooking | None = None
    validation: Validation | None = None
    confirmation: Confirmation | None = None
    refund: Refund | None = None
    replan: Replan | None = None

    def require_plan(self) -> Plan:
        if self.plan is None:
            from itinerant.errors import SchemaViolation

            raise SchemaViolation("the trip has no plan yet: the planner must run first")
        return self.plan


def total_of(trip: TripDocument) -> float:
    """What the booked flights and hotel cost together, in USD."""
    flight = trip.flight.total_usd if trip.flight else 0.0
    hotel = trip.hotel.total_usd if trip.hotel else 0.0
    return round(flight + hotel, 2)
