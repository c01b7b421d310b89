"""Varied trips for `itinerant demo`'s load: round trips from Madrid to the cities the inventory
serves well, over two months, one or two travellers."""

from __future__ import annotations

from datetime import date, timedelta

from itinerant.wire.ids import new_id
from services.contracts.trip import Traveller, TripRequest

THROUGHPUT_CITIES = ("LIS", "BCN", "CDG", "FCO", "BER", "AMS", "LHR", "OSL")


def load_trips(count: int) -> list[TripRequest]:
    trips = []
    for i in range(count):
        depart = date(2027, 5, 1) + timedelta(days=i % 60)
        trips.append(
            TripRequest(
                request_id=new_id(),
                traveller=Traveller(name=f"Load Tester {i + 1}"),
                origin="MAD",
                destination=THROUGHPUT_CITIES[i % len(THROUGHPUT_CITIES)],
                depart_date=depart,
                return_date=depart + timedelta(days=2 + i % 3),
                travellers=1 + i % 2,
            )
        )
    return trips
