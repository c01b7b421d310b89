"""kill -9 of an agent and of the coordinator while 50 sagas are in flight: every saga still ends,
each booking happens exactly once, and no hold is left behind by a compensated saga."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta

import pytest

from itinerant.cli.kafka_io import follow, publish_many
from services.contracts.trip import Traveller, TripRequest

from .conftest import System

pytestmark = pytest.mark.integration

CITIES = ("LIS", "BCN", "CDG", "FCO", "BER", "AMS", "LHR", "KEF")  # KEF: hotels sold out


def requests(count: int) -> list[TripRequest]:
    out = []
    for i in range(count):
        depart = date(2027, 10, 1) + timedelta(days=i % 20)
        out.append(
            TripRequest(
                request_id=str(uuid.uuid4()),
                traveller=Traveller(name=f"Crash {i}"),
                origin="MAD",
                destination=CITIES[i % len(CITIES)],
                depart_date=depart,
                return_date=depart + timedelta(days=3),
            )
        )
    return out


def test_kill_9_loses_nothing_and_books_once(system: System) -> None:
    batch = requests(50)
    sent = publish_many(system.settings, batch)
    supervisor = system.supervisor

    # Kill as soon as work is flowing: the flights agent first, then the coordinator.
    def flights_started() -> bool:
        db = system.db("flights")
        try:
            return bool(db.execute("SELECT COUNT(*) FROM flight_bookings").fetchone()[0])
        except Exception:
            return False

    deadline = time.monotonic() + 30
    while not flights_started() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert supervisor.kill("flights") is not None
    time.sleep(0.2)  # spacing between the two kills, not a wait for a condition
    assert supervisor.kill("coordinator") is not None

    results: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 120
    for seen in follow(system.settings, [system.settings.results_topic]):
        supervisor.supervise_once()  # restarts the killed services
        if seen is not None and seen.key in sent and seen.value is not None:
            previous = results.setdefault(seen.key, seen.value)
            assert previous["status"] == seen.value["status"]  # a repeat never disagrees
        if len(results) == len(sent) or time.monotonic() > deadline:
            break
    missing = set(sent) - set(results)
    assert not missing, f"{len(missing)} saga(s) never ended"
    assert supervisor.procs["flights"].restarts >= 1
    assert supervisor.procs["coordinator"].restarts >= 1

    flights = system.db("flights")
    hotels = system.db("hotels")
    by_status: dict[str, int] = {}
    for request in batch:
        saga_id = request.request_id
        assert saga_id is not None
        status = str(results[saga_id]["status"])
        by_status[status] = by_status.get(status, 0) + 1
        legs = flights.execute(
            "SELECT booking_id, leg, status FROM flight_bookings WHERE saga_id = ?", (saga_id,)
        ).fetchall()
        rooms = hotels.execute(
            "SELECT status FROM hotel_bookings WHERE saga_id = ?", (saga_id,)
        ).fetchall()
        assert len({b for b, _, _ in legs}) == 1 and len(legs) == 2, (saga_id, legs)
        if request.destination == "KEF":
            assert status == "compensated"
            assert {s for _, _, s in legs} == {"cancelled"}, "a hold was left behind"
            assert rooms == []
        else:
            assert status == "completed", results[saga_id]
            assert {s for _, _, s in legs} == {"held"}
            assert rooms == [("held",)]
    sold_out = sum(1 for r in batch if r.destination == "KEF")
    assert by_status == {"completed": len(batch) - sold_out, "compensated": sold_out}
