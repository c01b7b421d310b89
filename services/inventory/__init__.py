"""The deterministic travel inventory that ships with the project (read-only catalogue).

Bookings against it live in the flights and hotels agents' own databases; availability is
capacity minus active holds, so the catalogue itself never changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Flight:
    flight_no: str
    origin: str
    destination: str
    departs: str
    price_usd: float
    seats: int


@dataclass(frozen=True)
class Hotel:
    hotel_id: str
    name: str
    city: str
    nightly_usd: float
    rooms: int


@dataclass(frozen=True)
class Catalogue:
    cities: dict[str, str]
    flights: dict[str, Flight]
    hotels: dict[str, Hotel]

    def flight_on_route(self, origin: str, destination: str) -> Flight | None:
        for flight in self.flights.values():
            if flight.origin == origin and flight.destination == destination:
                return flight
        return None

    def hotels_in(self, city: str) -> list[Hotel]:
        return sorted(
            (h for h in self.hotels.values() if h.city == city), key=lambda h: h.nightly_usd
        )

    def city_code(self, name: str) -> str | None:
        wanted = name.strip().lower()
        for code, city in self.cities.items():
            if wanted in (code.lower(), city.lower()):
                return code
        return None


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    raw = json.loads(resources.files(__name__).joinpath("catalogue.json").read_text())
    return Catalogue(
        cities=dict(raw["cities"]),
        flights={f["flight_no"]: Flight(**f) for f in raw["flights"]},
        hotels={h["hotel_id"]: Hotel(**h) for h in raw["hotels"]},
    )
