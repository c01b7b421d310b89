"""At-least-once delivery, exactly-once effects (docs/architecture.md#delivery-guarantees), and
request ingress in the mesh."""

from __future__ import annotations

import json

from itinerant.coordinator.saga import SagaState
from itinerant.runtime import dlq
from itinerant.testing import InMemoryMesh
from itinerant.wire.envelope import OutMessage

TRIP = {
    "traveller": {"name": "Ada"},
    "origin": "MAD",
    "destination": "LIS",
    "depart_date": "2027-03-12",
    "return_date": "2027-03-15",
    "travellers": 2,
}


async def run_until(mesh: InMemoryMesh, topic: str, ce_type: bytes | None = None) -> OutMessage:
    def wanted(m: OutMessage) -> bool:
        return m.topic == topic and (ce_type is None or m.header("ce_type") == ce_type)

    while mesh.queue and not wanted(mesh.queue[0]):
        await mesh.deliver(mesh.queue.popleft())
    assert mesh.queue, f"nothing was sent to {topic}"
    return mesh.queue.popleft()


def ids(messages: list[OutMessage]) -> list[tuple[str, bytes | None]]:
    return [(m.topic, m.header("ce_id")) for m in messages]


async def test_same_flights_message_twice_books_once(mesh: InMemoryMesh) -> None:
    saga_id = mesh.publish_request(dict(TRIP))
    message = await run_until(
        mesh, mesh.settings.agent_topic("flights"), b"itinerant.flights.book.v1"
    )
    first = await mesh.deliver(message)
    second = await mesh.deliver(message)
    assert first is not None and second is not None
    assert first.outcome == "ok"
    assert second.outcome == "duplicate"
    assert ids(second.outputs) == ids(first.outputs)
    assert [m.value for m in second.outputs] == [m.value for m in first.outputs]
    assert [t for t, _ in ids(first.outputs)] == [
        mesh.settings.events_topic,
        mesh.settings.agent_topic("hotels"),
    ]
    rows = (
        mesh.stores["flights"]
        .connection.execute(
            "SELECT booking_id, leg, status FROM flight_bookings WHERE saga_id = ?", (saga_id,)
        )
        .fetchall()
    )
    assert len({r[0] for r in rows}) == 1
    assert sorted((r[1], r[2]) for r in rows) == [("back", "held"), ("out", "held")]
    await mesh.run()
    # The duplicate outputs reached the next hops, which dropped them: one saga, one result.
    assert mesh.results()[saga_id]["status"] == "completed"
    saga = mesh.saga(saga_id)
    assert saga is not None and saga.state is SagaState.COMPLETED
    assert [(s.agent, s.action) for s in saga.steps] == [
        ("planner", "plan"),
        ("flights", "search"),
        ("hotels", "search"),
        ("validator", "run"),
        ("approval", "gate"),
        ("flights", "book"),
        ("hotels", "book"),
        ("notifier", "run"),
    ]
    # Re-sent outputs keep their ids, so a results reader sees one result (it may arrive twice).
    assert len({m.header("ce_id") for m in mesh.log[mesh.settings.results_topic]}) == 1


async def test_whole_saga_delivered_twice_has_one_effect_each(mesh: InMemoryMesh) -> None:
    saga_id = mesh.publish_request(dict(TRIP))
    # Deliver every message twice, as a consumer that crashed before committing would.
    while mesh.queue:
        message = mesh.queue.popleft()
        await mesh.deliver(message)
        again = await mesh.deliver(message)
        if again is not None:
            assert again.outcome == "duplicate", (message.topic, again.outcome)
    assert mesh.results()[saga_id]["status"] == "completed"
    flights = (
        mesh.stores["flights"]
        .connection.execute("SELECT COUNT(DISTINCT booking_id) FROM flight_bookings")
        .fetchone()[0]
    )
    assert flights == 1
    results = mesh.log[mesh.settings.results_topic]
    assert len({m.header("ce_id") for m in results}) == 1


async def test_request_with_missing_fields_is_rejected_with_a_reason(mesh: InMemoryMesh) -> None:
    value = json.dumps({"traveller": {"name": "Ada"}, "origin": "MAD"}).encode()
    sent = OutMessage(mesh.settings.requests_topic, b"k-1", value, [("ce_sagaid", b"s-bad")])
    mesh.publish(sent)
    await mesh.run()
    result = mesh.results()["s-bad"]
    assert result["status"] == "rejected"
    assert result["reason"] == "invalid_request"
    assert "destination" in result["error"] and "depart_date" in result["error"]
    assert "examples/requests" in result["error"]
    assert result["origin"] == {"topic": mesh.settings.requests_topic, "partition": 0, "offset": 0}
    letters = mesh.dead_letters()
    assert len(letters) == 1
    assert letters[0].value == value
    assert letters[0].key == b"k-1"
    assert letters[0].headers[:1] == sent.headers
    assert letters[0].header(dlq.REASON) == b"invalid_request"
    assert letters[0].header(dlq.SERVICE) == b"coordinator"
    saga = mesh.saga("s-bad")
    assert saga is not None and saga.state is SagaState.REJECTED
    assert not mesh.log.get(mesh.settings.agent_topic("planner"))


async def test_bare_request_missing_fields_gets_a_result_under_its_position(
    mesh: InMemoryMesh,
) -> None:
    mesh.publish(OutMessage(mesh.settings.requests_topic, None, b"{}", []))
    await mesh.run()
    [(saga_id, result)] = mesh.results().items()
    assert result["status"] == "rejected"
    assert result["saga_id"] == saga_id
    assert "traveller" in result["error"]
    assert mesh.dead_letters()[0].key == saga_id.encode()


async def test_bare_request_with_request_id_missing_fields_is_answered_under_that_id(
    mesh: InMemoryMesh,
) -> None:
    # A kcat user sends {"request_id": "mine", ...} and waits for the result keyed "mine".
    value = json.dumps({"request_id": "mine", "traveller": {"name": "Ada"}}).encode()
    mesh.publish(OutMessage(mesh.settings.requests_topic, None, value, []))
    await mesh.run()
    assert mesh.results().get("mine", {}).get("status") == "rejected", mesh.results()


async def test_same_request_id_twice_is_one_saga(mesh: InMemoryMesh) -> None:
    request = {**TRIP, "request_id": "trip-42"}
    mesh.publish_request(request)
    mesh.publish_request(request)
    await mesh.run()
    assert mesh.results()["trip-42"]["status"] == "completed"
    assert len(mesh.log[mesh.settings.results_topic]) == 1
    assert len(mesh.log[mesh.settings.agent_topic("planner")]) == 1
    count = mesh.stores["coordinator"].connection.execute("SELECT COUNT(*) FROM sagas").fetchone()
    assert count[0] == 1
    bookings = (
        mesh.stores["flights"]
        .connection.execute("SELECT COUNT(DISTINCT booking_id) FROM flight_bookings")
        .fetchone()[0]
    )
    assert bookings == 1
    # ... and a third, after the saga finished, changes nothing either
    mesh.publish_request(request)
    await mesh.run()
    assert len(mesh.log[mesh.settings.results_topic]) == 1
