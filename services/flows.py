"""The travel mesh's flows, declared in one place. The planner chooses among them by the request's
content (content-based routing); the runtime advances the slip from there.

    trip:   planner.plan -> [flights.search | hotels.search] -> validator -> approval gate
                         -> flights.book -> hotels.book (skipped for a same-day return) -> notifier
    refund: planner.plan -> flights.quote_refund -> approval gate -> flights.refund -> notifier

Nothing is booked or refunded before the validator and the approval gate have passed, so a
re-plan or a rejection has nothing to undo; a failure after a booking still compensates it.
"""

from __future__ import annotations

from itinerant import Approval, Flow, Parallel, Step

PLAN = Step(agent="planner", action="plan")
#: The message filter of the hotel steps: a same-day return needs no hotel.
NEEDS_HOTEL = "plan.needs_hotel"
#: The validator's way back when an LLM planner's facts are wrong.
REPLAN = Step(agent="planner", action="plan")

_SEARCHES = (
    Step(agent="flights", action="search"),
    Step(agent="hotels", action="search", when=NEEDS_HOTEL),
)
_BOOK_AND_CONFIRM = (
    Step(agent="validator"),
    Approval(),
    Step(agent="flights", action="book"),
    Step(agent="hotels", action="book", when=NEEDS_HOTEL),
    Step(agent="notifier"),
)

TRIP = Flow(
    "trip",
    [Parallel(parallel=list(_SEARCHES), join="all", timeout_s=20.0), *_BOOK_AND_CONFIRM],
    "search flights and hotels in parallel, validate, approve, book, confirm",
)
TRIP_SEQUENTIAL = Flow(
    "trip-sequential",
    [*_SEARCHES, *_BOOK_AND_CONFIRM],
    "the trip flow with the searches in turn (ITINERANT_PARALLEL_SEARCH=false)",
)
REFUND = Flow(
    "refund",
    [
        Step(agent="flights", action="quote_refund"),
        Approval(),
        Step(agent="flights", action="refund"),
        Step(agent="notifier"),
    ],
    "quote the refund, approve, refund, confirm",
)
FLOWS = (TRIP, TRIP_SEQUENTIAL, REFUND)
