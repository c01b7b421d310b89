"""The approval policy (pure) and the control event a human's decision travels in.

A saga stops at the approval gate (a slip step ``approval.gate`` the coordinator runs) when:

* the trip's quoted (or booked) total is above ``ITINERANT_APPROVAL_THRESHOLD_USD``;
* a refund's amount is above the same threshold;
* the validator left a warning for a human.

``itinerant approvals approve|reject <saga> --why ...`` publishes ``ApprovalDecision`` on the saga
events topic, keyed by saga id, so it is ordered with the saga's own events.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contracts.trip import TripDocument

DECISION_TYPE = "itinerant.saga.approval_decided"


class ApprovalDecision(BaseModel):
    """``itinerant.saga.approval_decided.v1``: a human approves or rejects a held step."""

    model_config = ConfigDict(extra="forbid")

    saga_id: str = Field(min_length=1, max_length=100)
    decision: Literal["approve", "reject"]
    by: str = Field(min_length=1, max_length=100)
    why: str = Field(min_length=1, max_length=500)


def amount_of(trip: TripDocument) -> float | None:
    """What the side-effecting step after the gate would move, in USD."""
    if trip.refund is not None:
        return trip.refund.amount_usd
    parts = [
        trip.flight.total_usd if trip.flight else trip.flight_quote and trip.flight_quote.total_usd,
        trip.hotel.total_usd if trip.hotel else trip.hotel_quote and trip.hotel_quote.total_usd,
    ]
    known = [p for p in parts if p]
    return round(sum(known), 2) if known else None


def approval_reasons(
    payload: dict[str, Any], threshold_usd: float
) -> tuple[list[str], float | None]:
    """Why a human must approve (empty: nobody needs to), and the amount at stake."""
    trip = TripDocument.model_validate(payload)
    reasons: list[str] = []
    amount = amount_of(trip)
    if amount is not None and amount > threshold_usd:
        what = f"refund of booking {trip.refund.booking_ref}" if trip.refund else "trip total"
        reasons.append(f"{what} ${amount:.2f} is over the approval threshold ${threshold_usd:.2f}")
    if trip.validation is not None:
        reasons.extend(f"validator warning: {w}" for w in trip.validation.warnings)
    return reasons, amount
