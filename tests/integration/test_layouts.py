"""The shared layout (every agent in one worker process) runs the same flows as one process per
service: a trip completes, a sold-out trip compensates, each agent keeps its own state store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .conftest import Broker, System, start_system

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(broker, tmp_path_factory.mktemp("shared"), layout="shared")
    try:
        yield running
    finally:
        running.supervisor.stop()


def test_shared_layout_runs_two_processes(system: System) -> None:
    assert sorted(system.supervisor.procs) == ["agents", "coordinator", "gateway"]


def test_trip_and_sold_out_in_the_shared_layout(system: System) -> None:
    done = system.publish("trip.json")
    sold_out = system.publish("sold-out.json")
    results = system.results({done, sold_out})
    assert results[done]["status"] == "completed"
    assert (results[sold_out]["status"], results[sold_out]["reason"]) == ("compensated", "sold_out")
    flights = (
        system.db("flights")
        .execute(
            "SELECT saga_id, status FROM flight_bookings WHERE saga_id IN (?, ?) ORDER BY saga_id",
            (done, sold_out),
        )
        .fetchall()
    )
    assert sorted({(s, st) for s, st in flights}) == sorted(
        {(done, "held"), (sold_out, "cancelled")}
    )
