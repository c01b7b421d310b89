"""The travel mesh's approval policy: when a human must decide before the side-effecting step
after an approval gate (the gate itself is the framework's; see docs/framework.md).

A saga waits at the gate when the trip's quoted (or booked) total, or a refund's amount, is above
``ITINERANT_APPROVAL_THRESHOLD_USD``, or when the validator left a warning for a human.
"""

from __future__ import annotations

from typing import Any

from itinerant.mesh import ApprovalCheck
from services.contracts.trip import TripDocument
from services.settings import travel_settings


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


def approval_reasons(payload: dict[str, Any], threshold_usd: float) -> ApprovalCheck:
    """Why a human must approve (no reasons: nobody needs to), and the amount at stake."""
    trip = TripDocument.model_validate(payload)
    reasons: list[str] = []
    amount = amount_of(trip)
    if amount is not None and amount > threshold_usd:
        what = f"refund of booking {trip.refund.booking_ref}" if trip.refund else "trip total"
        reasons.append(f"{what} ${amount:.2f} is over the approval threshold ${threshold_usd:.2f}")
    if trip.validation is not None:
        reasons.extend(f"validator warning: {w}" for w in trip.validation.warnings)
    return ApprovalCheck(reasons, amount)


def needs_approval(payload: dict[str, Any]) -> ApprovalCheck:
    return approval_reasons(payload, travel_settings().approval_threshold_usd)
