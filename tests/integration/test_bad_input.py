"""Bad input on a real broker: a clear error, nothing lost, services keep running."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from typing import Any

import pytest

from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope
from itinerant.wire.slip import APPROVAL_VISIT, Slip, Step, Visit
from services.contracts.trip import TripDocument, TripRequest

from .conftest import EXAMPLES, System

pytestmark = pytest.mark.integration

DLQ_HEADERS = {
    "x-dlq-reason",
    "x-dlq-error-type",
    "x-dlq-error",
    "x-dlq-service",
    "x-dlq-origin-topic",
    "x-dlq-origin-partition",
    "x-dlq-origin-offset",
    "x-dlq-attempts",
    "x-dlq-at",
}


def trip_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / "trip.json").read_text())
    body.update(changes)
    return body


def flights_message(
    saga_id: str,
    *,
    steps: list[Step] | None = None,
    next_: int = 1,
    ce_type: str = "itinerant.flights.book.v1",
    data: bytes | None = None,
    message_id: str | None = None,
) -> Envelope:
    request = TripRequest.model_validate(trip_body(request_id=saga_id))
    from services.contracts.trip import Plan

    plan = Plan(
        flow="trip",
        origin="MAD",
        destination="LIS",
        depart_date=request.depart_date,
        return_date=request.return_date,
        travellers=1,
        planned_by="test",
    )  # type: ignore[arg-type]
    from datetime import UTC, datetime, timedelta

    return Envelope(
        id=message_id or str(uuid.uuid4()),
        type=ce_type,
        source="/itinerant/coordinator",  # as after an approval gate released it
        saga_id=saga_id,
        data=data
        if data is not None
        else TripDocument(request=request, plan=plan).model_dump_json().encode(),
        slip=Slip(
            steps=steps
            or [
                Step(agent="planner", action="plan"),
                Step(agent="flights", action="book"),
                Step(agent="notifier"),
            ],
            next=next_,
            # The steps a booking requires, as if they ran (signed by System.sign).
            visited=[
                Visit(agent=name, id=str(uuid.uuid4()), at=datetime.now(UTC), step=index)
                for index, name in enumerate(("planner", "validator", APPROVAL_VISIT))
            ],
        ),
        budget=Budget(max_hops=10, deadline=datetime.now(UTC) + timedelta(minutes=5)),
    )


@pytest.mark.parametrize(
    ("label", "value", "headers", "reason"),
    [
        ("not json", b"{this is not json", [], "invalid_json"),
        ("empty", b"", [], "empty_value"),
        ("wrong shape", json.dumps({"hello": "world"}).encode(), [], "invalid_request"),
        (
            "missing fields",
            json.dumps({"traveller": {"name": "X"}, "origin": "MAD"}).encode(),
            [],
            "invalid_request",
        ),
        (
            "unknown version",
            json.dumps(trip_body()).encode(),
            [("ce_type", b"itinerant.request.v7")],
            "unsupported_version",
        ),
        ("oversized", json.dumps(trip_body(text="x" * 300_000)).encode(), [], "message_too_large"),
    ],
)
def test_bad_requests_get_a_rejected_result_and_a_dead_letter(
    system: System, label: str, value: bytes, headers: list[tuple[str, bytes]], reason: str
) -> None:
    saga_id = str(uuid.uuid4())
    system.publish_raw(
        system.settings.requests_topic,
        value,
        saga_id.encode(),
        [("ce_sagaid", saga_id.encode()), *headers],
    )
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "rejected", label
    assert result["reason"] == reason
    assert result["error"]  # says what is wrong and what to do
    letters = system.dead_letters(lambda s: s.key == saga_id)
    letter = letters[0]
    assert set(letter.headers) >= DLQ_HEADERS
    assert letter.headers["x-dlq-reason"] == reason
    assert letter.headers["x-dlq-origin-topic"] == system.settings.requests_topic


def test_unknown_agent_in_slip_is_dead_lettered_and_parks_the_saga(system: System) -> None:
    saga_id = system.publish("trip.json")
    system.results({saga_id})  # let the saga exist and complete first
    ghost = str(uuid.uuid4())
    # A new saga that the coordinator knows, whose slip names an agent that does not exist.
    system.publish_raw(
        system.settings.requests_topic, json.dumps(trip_body(request_id=ghost)).encode()
    )
    system.results({ghost})
    message = flights_message(
        ghost,
        steps=[
            Step(agent="planner", action="plan"),
            Step(agent="flights", action="book"),
            Step(agent="teleporter"),
        ],
    )
    out = system.sign(message.to_message(system.settings.agent_topic("flights")))
    system.publish_raw(out.topic, out.value, out.key, out.headers)
    letters = system.dead_letters(lambda s: s.headers.get("ce_id") == message.id)
    assert letters[0].headers["x-dlq-reason"] == "unknown_agent"
    assert "teleporter" in letters[0].headers["x-dlq-error"]
    # Nothing was booked for it: the check happens before the handler runs.
    rows = (
        system.db("flights")
        .execute("SELECT COUNT(*) FROM flight_bookings WHERE idempotency_key = ?", (message.id,))
        .fetchone()
    )
    assert rows == (0,)


@pytest.mark.parametrize(
    ("label", "kwargs", "reason"),
    [
        ("payload not json", {"data": b"\xff\xfe not json"}, "invalid_json"),
        ("payload wrong shape", {"data": b'{"request": 42}'}, "schema_violation"),
        ("unknown version", {"ce_type": "itinerant.flights.book.v9"}, "unsupported_version"),
        ("cursor out of range", {"next_": 7}, "invalid_slip"),
    ],
)
def test_poison_on_an_agent_topic_lands_in_the_dlq_unchanged(
    system: System, label: str, kwargs: dict[str, Any], reason: str
) -> None:
    message = flights_message(str(uuid.uuid4()), **kwargs)
    out = system.sign(message.to_message(system.settings.agent_topic("flights")))
    system.publish_raw(out.topic, out.value, out.key, out.headers)
    letter = system.dead_letters(lambda s: s.headers.get("ce_id") == message.id)[0]
    assert letter.headers["x-dlq-reason"] == reason, label
    assert letter.headers["x-dlq-service"] == "flights"
    original = {k: v.decode() for k, v in out.headers}
    assert {k: letter.headers[k] for k in original} == original  # headers kept unchanged


def test_duplicate_delivery_books_once(system: System) -> None:
    saga_id = str(uuid.uuid4())
    message = flights_message(saga_id)
    out = system.sign(message.to_message(system.settings.agent_topic("flights")))
    for _ in range(2):
        system.publish_raw(out.topic, out.value, out.key, out.headers)
    # Both copies are handled: the first books and forwards, the repeat re-sends that forward.
    forwards = [
        s
        for s in system.collect(
            [system.settings.agent_topic("notifier")],
            lambda seen: (
                len([s for s in seen if s.headers.get("ce_causationid") == message.id]) >= 2
            ),
            30,
            "the forward of the original and the re-sent forward of the duplicate",
        )
        if s.headers.get("ce_causationid") == message.id
    ]
    assert len({f.headers["ce_id"] for f in forwards}) == 1  # same id: the next hop drops it
    bookings = (
        system.db("flights")
        .execute(
            "SELECT leg FROM flight_bookings WHERE idempotency_key = ? ORDER BY leg", (message.id,)
        )
        .fetchall()
    )
    assert bookings == [("back",), ("out",)]  # one booking (two legs), not two


def test_services_survive_poison(system: System) -> None:
    """After all the poison above, the system still completes a normal trip."""
    saga_id = system.publish("trip.json")
    assert system.results({saga_id})[saga_id]["status"] == "completed"
    assert all(p.alive() for p in system.supervisor.procs.values())
    assert all(p.restarts == 0 for p in system.supervisor.procs.values())


def test_cli_without_a_broker_fails_clearly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    run = subprocess.run(
        [".venv/bin/itinerant", "publish", "examples/requests/trip.json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "COLUMNS": "200",
        },
    )
    assert run.returncode != 0
    assert "itinerant up" in run.stderr and f"127.0.0.1:{port}" in run.stderr, run.stderr
    assert time.monotonic() - started < 30
