"""`itinerant scale` on a running mesh (docs/operations.md#replicas): flights goes from one process
to three while sagas run, each new replica takes a share of the partitions, then back to one
while more sagas run. Every saga settles, nothing is booked twice, and a refused request
(a service that cannot scale) is answered with what can.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from itinerant.settings import replica_name

from .conftest import Broker, System, free_port_block, poll_until, start_system
from .failure_helpers import ITINERANT, booking_problems, bookings_by_saga, trip_requests
from .test_chaos import wait_settled
from .test_replicas import shared_by

pytestmark = pytest.mark.integration

PARTITIONS = 4


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(
        broker,
        tmp_path_factory.mktemp("scale"),
        partitions=PARTITIONS,
        # room for three replicas' metrics ports (100 apart)
        metrics_port_base=free_port_block(300),
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def scale(system: System, spec: str) -> subprocess.CompletedProcess[str]:
    """`itinerant scale spec`, with this test's supervisor looping meanwhile (it is the running
    `itinerant up` the command talks to)."""
    command = subprocess.Popen(
        [ITINERANT, "scale", spec, "--timeout", "90"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**system.settings.to_env(), "COLUMNS": "250", "PATH": "/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 150
    while command.poll() is None and time.monotonic() < deadline:
        system.supervisor.supervise_once()
        time.sleep(0.1)
    if command.poll() is None:
        command.kill()
    stdout, stderr = command.communicate(timeout=10)
    return subprocess.CompletedProcess(command.args, command.returncode, stdout, stderr)


SOLD_OUT: set[str] = set()


def publish_trips(system: System, count: int, tag: str) -> set[str]:
    """``count`` trips, every eighth to a sold-out city (kept in SOLD_OUT)."""
    trips = trip_requests(count, tag=tag)
    SOLD_OUT.update(t.request_id for t in trips if t.destination == "KEF" and t.request_id)
    return {system.publish(trip) for trip in trips}


def test_scale_up_and_down_while_sagas_run(system: System) -> None:
    procs = system.supervisor.procs
    first = publish_trips(system, 12, "Before")
    grown = scale(system, "flights=3")
    assert grown.returncode == 0, grown.stderr
    assert "started flights-2 (ready)" in grown.stdout, grown.stdout
    assert "started flights-3 (ready)" in grown.stdout, grown.stdout
    shares = poll_until(
        lambda: shared_by(system, "flights", 3), 60, "three flights members, each with partitions"
    )
    assert sum(shares) == PARTITIONS, shares
    during = publish_trips(system, 12, "Grown")

    # Back to one while those run: the two stopped replicas' partitions move to flights.
    shrunk = scale(system, "flights=1")
    assert shrunk.returncode == 0, shrunk.stderr
    assert "stopped flights-2" in shrunk.stdout and "stopped flights-3" in shrunk.stdout
    assert replica_name("flights", 2) not in procs and replica_name("flights", 3) not in procs
    assert poll_until(lambda: shared_by(system, "flights", 1), 60, "flights alone again")
    after = publish_trips(system, 12, "Shrunk")

    states = wait_settled(system, first | during | after, 150)
    assert booking_problems(states, bookings_by_saga(system.settings), SOLD_OUT) == []
    assert sorted(s for s, state in states.items() if state != "completed") == sorted(SOLD_OUT)

    again = scale(system, "flights=1")
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout


def test_a_service_that_cannot_scale_is_refused_with_what_can(system: System) -> None:
    refused = scale(system, "gateway=2")
    assert refused.returncode == 2
    assert "gateway cannot run as replicas" in refused.stderr, refused.stderr
    assert "flights" in refused.stderr
    assert "gateway-2" not in system.supervisor.procs
    too_many = scale(system, f"flights={PARTITIONS + 1}")
    assert too_many.returncode == 2 and "between 1 and 4" in too_many.stderr, too_many.stderr
