"""Poison messages (docs/architecture.md#the-dead-letter-topic) through the in-memory mesh: the
original goes to the DLQ unchanged
with every ``x-dlq-*`` header, and a ``step_deadlettered`` event parks the saga."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from itinerant.coordinator.saga import SagaState
from itinerant.runtime import dlq
from itinerant.testing import InMemoryMesh
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, InRecord, OutMessage, replace_headers
from itinerant.wire.slip import Slip, Step

TRIP = {
    "traveller": {"name": "Ada"},
    "origin": "MAD",
    "destination": "LIS",
    "depart_date": "2027-03-12",
    "return_date": "2027-03-15",
    "travellers": 2,
}


async def run_until(mesh: InMemoryMesh, topic: str) -> OutMessage:
    """Deliver queued messages until the next one is for ``topic``; take it off the queue."""
    while mesh.queue and mesh.queue[0].topic != topic:
        await mesh.deliver(mesh.queue.popleft())
    assert mesh.queue, f"nothing was sent to {topic}"
    return mesh.queue.popleft()


async def flights_message(mesh: InMemoryMesh) -> tuple[str, OutMessage]:
    saga_id = mesh.publish_request(dict(TRIP))
    message = await run_until(mesh, mesh.settings.agent_topic("flights"))
    saga = mesh.saga(saga_id)
    assert saga is not None and saga.state is SagaState.RUNNING
    return saga_id, message


def envelope_of(message: OutMessage) -> Envelope:
    return Envelope.from_record(
        InRecord(message.topic, 0, 0, message.key, message.value, message.headers)
    )


def the_dead_letter(mesh: InMemoryMesh) -> OutMessage:
    letters = mesh.dead_letters()
    assert len(letters) == 1, [m.header(dlq.REASON) for m in letters]
    return letters[0]


def assert_dead_lettered(
    mesh: InMemoryMesh, sent: OutMessage, reason: str, *, service: str = "flights"
) -> OutMessage:
    letter = the_dead_letter(mesh)
    assert letter.topic == mesh.settings.dlq_topic
    assert letter.header(dlq.REASON) == reason.encode(), letter.header(dlq.ERROR)
    for name in dlq.DLQ_HEADERS:
        assert letter.header(name), f"{name} missing"
    assert letter.header(dlq.SERVICE) == service.encode()
    assert letter.header(dlq.ORIGIN_TOPIC) == sent.topic.encode()
    assert letter.header(dlq.ORIGIN_PARTITION) == b"0"
    offset = [m for m in mesh.log[sent.topic]].index(sent)
    assert letter.header(dlq.ORIGIN_OFFSET) == str(offset).encode()
    assert letter.header(dlq.ATTEMPTS) == b"1"
    at = datetime.fromisoformat(letter.header(dlq.AT).decode())  # type: ignore[union-attr]
    assert abs(datetime.now(UTC) - at) < timedelta(minutes=1)
    assert len(letter.header(dlq.ERROR) or b"") <= dlq.MAX_ERROR_CHARS * 4
    # the original, unchanged: same key, value and headers (the x-dlq-* ones come after)
    assert letter.key == sent.key
    assert letter.value == (sent.value or b"")
    assert letter.headers[: len(sent.headers)] == sent.headers
    assert {k for k, _ in letter.headers[len(sent.headers) :]} == set(dlq.DLQ_HEADERS)
    return letter


def assert_parked(mesh: InMemoryMesh, saga_id: str, reason: str) -> None:
    saga = mesh.saga(saga_id)
    assert saga is not None
    assert saga.state is SagaState.PARKED, (saga.state, saga.timeline)
    assert saga.reason == reason
    events = [e for e in mesh.envelopes(mesh.settings.events_topic)]
    kinds = [json.loads(e.data)["kind"] for e in events]
    assert "step_deadlettered" in kinds
    assert saga_id not in mesh.results()  # nobody is told anything yet: an operator decides


async def test_not_json_value_is_dead_lettered_and_parks(mesh: InMemoryMesh) -> None:
    saga_id, good = await flights_message(mesh)
    bad = mesh.signed(OutMessage(good.topic, good.key, b"\x00\xffnot json at all", good.headers))
    mesh.publish(bad)
    await mesh.run()
    letter = assert_dead_lettered(mesh, bad, "invalid_json")
    assert letter.header(dlq.ERROR_TYPE) == b"SchemaViolation"
    assert_parked(mesh, saga_id, "invalid_json")
    assert (
        mesh.stores["flights"]
        .connection.execute("SELECT COUNT(*) FROM flight_bookings")
        .fetchone()[0]
        == 0
    )


async def test_replaying_the_fixed_message_resumes_the_parked_saga(mesh: InMemoryMesh) -> None:
    saga_id, good = await flights_message(mesh)
    mesh.publish(mesh.signed(OutMessage(good.topic, good.key, b"garbage", good.headers)))
    await mesh.run()
    assert_parked(mesh, saga_id, "invalid_json")
    # The same message id, now with a valid value: the dead-lettered id was not marked processed.
    mesh.publish(good)
    await mesh.run()
    assert mesh.results()[saga_id]["status"] == "completed"
    saga = mesh.saga(saga_id)
    assert saga is not None and saga.state is SagaState.COMPLETED
    assert "resumed" in [e.event for e in saga.timeline]


async def test_wrong_payload_shape_is_schema_violation(mesh: InMemoryMesh) -> None:
    saga_id, good = await flights_message(mesh)
    bad = mesh.signed(
        OutMessage(good.topic, good.key, json.dumps({"trip": "yes"}).encode(), good.headers)
    )
    mesh.publish(bad)
    await mesh.run()
    letter = assert_dead_lettered(mesh, bad, "schema_violation")
    assert b"request" in (letter.header(dlq.ERROR) or b"")  # names the field that is wrong
    assert_parked(mesh, saga_id, "schema_violation")


async def test_unknown_version_is_unsupported_version(mesh: InMemoryMesh) -> None:
    saga_id, good = await flights_message(mesh)
    bad = mesh.signed(
        envelope_of(good).evolve(type="itinerant.flights.book.v9").to_message(good.topic)
    )
    mesh.publish(bad)
    await mesh.run()
    letter = assert_dead_lettered(mesh, bad, "unsupported_version")
    assert b"v9" in (letter.header(dlq.ERROR) or b"")
    assert_parked(mesh, saga_id, "unsupported_version")


async def test_slip_naming_an_unknown_agent(mesh: InMemoryMesh) -> None:
    saga_id, good = await flights_message(mesh)
    env = envelope_of(good)
    assert env.slip is not None
    slip = env.slip.with_remaining([Step(agent="teleporter"), Step(agent="notifier")])
    bad = mesh.signed(env.evolve(slip=slip).to_message(good.topic))
    mesh.publish(bad)
    await mesh.run()
    letter = assert_dead_lettered(mesh, bad, "unknown_agent")
    assert b"teleporter" in (letter.header(dlq.ERROR) or b"")
    assert_parked(mesh, saga_id, "unknown_agent")


async def test_slip_cursor_out_of_range(mesh: InMemoryMesh) -> None:
    saga_id, good = await flights_message(mesh)
    env = envelope_of(good)
    assert env.slip is not None
    slip = env.slip.model_copy(update={"next": len(env.slip.steps) + 3})
    bad = mesh.signed(env.evolve(slip=slip).to_message(good.topic))
    mesh.publish(bad)
    await mesh.run()
    assert_dead_lettered(mesh, bad, "invalid_slip")
    assert_parked(mesh, saga_id, "invalid_slip")


async def test_crafted_envelope_for_an_unknown_saga_is_dead_lettered(mesh: InMemoryMesh) -> None:
    now = datetime.now(UTC)
    env = Envelope(
        id="crafted-1",
        type="itinerant.flights.search.v1",
        source="/itinerant/planner",
        saga_id="no-such-saga",
        data=b"{}",
        slip=Slip(steps=[Step(agent="flights", action="search")]),
        budget=Budget(max_hops=5, deadline=now + timedelta(minutes=1)),
    )
    sent = mesh.signed(env.to_message(mesh.settings.agent_topic("flights")))
    mesh.publish(sent)
    await mesh.run()
    assert_dead_lettered(mesh, sent, "schema_violation")
    assert mesh.saga("no-such-saga") is None  # the event for an unknown saga is ignored


async def test_missing_headers_are_dead_lettered(mesh: InMemoryMesh) -> None:
    _, good = await flights_message(mesh)
    headers = [(k, v) for k, v in good.headers if k not in ("ce_type", "ce_id")]
    bad = mesh.signed(OutMessage(good.topic, good.key, good.value, headers))
    mesh.publish(bad)
    await mesh.run()
    letter = assert_dead_lettered(mesh, bad, "missing_header")
    error = letter.header(dlq.ERROR) or b""
    assert b"ce_type" in error and b"ce_id" in error
    assert b"requests topic" in error  # the hint says what to do


async def test_missing_header_with_a_known_saga_parks_it(mesh: InMemoryMesh) -> None:
    # ce_sagaid is there, so the runtime can (docs/architecture.md#the-dead-letter-topic: "then
    # emits step_deadlettered") tell the
    # coordinator; otherwise the saga sits in `running` until the step timeout compensates it.
    saga_id, good = await flights_message(mesh)
    headers = [(k, v) for k, v in good.headers if k != "ce_type"]
    mesh.publish(mesh.signed(OutMessage(good.topic, good.key, good.value, headers)))
    await mesh.run()
    assert_parked(mesh, saga_id, "missing_header")


async def test_oversized_value_is_message_too_large(mesh: InMemoryMesh) -> None:
    _, good = await flights_message(mesh)
    big = good.value + b" " * mesh.settings.max_message_bytes
    bad = mesh.signed(OutMessage(good.topic, good.key, big, good.headers))
    mesh.publish(bad)
    await mesh.run()
    letter = assert_dead_lettered(mesh, bad, "message_too_large")
    assert b"ITINERANT_MAX_MESSAGE_BYTES" in (letter.header(dlq.ERROR) or b"")


async def test_oversized_value_parks_the_saga(mesh: InMemoryMesh) -> None:
    # The headers are valid, so the runtime knows the saga and must emit step_deadlettered.
    saga_id, good = await flights_message(mesh)
    big = good.value + b" " * mesh.settings.max_message_bytes
    mesh.publish(mesh.signed(OutMessage(good.topic, good.key, big, good.headers)))
    await mesh.run()
    assert_parked(mesh, saga_id, "message_too_large")


async def test_non_utf8_header_is_dead_lettered(mesh: InMemoryMesh) -> None:
    _, good = await flights_message(mesh)
    headers = replace_headers(good.headers, [("ce_source", b"/itinerant/\xff")])
    bad = mesh.signed(OutMessage(good.topic, good.key, good.value, headers), "planner")
    mesh.publish(bad)
    await mesh.run()
    assert_dead_lettered(mesh, bad, "undecodable")


async def test_a_previous_dead_letters_headers_are_replaced_not_duplicated(
    mesh: InMemoryMesh,
) -> None:
    saga_id, good = await flights_message(mesh)
    stale = [(dlq.REASON, b"old_reason"), (dlq.ATTEMPTS, b"9")]
    bad = mesh.signed(OutMessage(good.topic, good.key, b"garbage", [*good.headers, *stale]))
    mesh.publish(bad)
    await mesh.run()
    letter = the_dead_letter(mesh)
    assert [v for k, v in letter.headers if k == dlq.REASON] == [b"invalid_json"]
    assert [v for k, v in letter.headers if k == dlq.ATTEMPTS] == [b"1"]
    kept = [h for h in bad.headers if not h[0].startswith("x-dlq-")]
    assert letter.headers[: len(kept)] == kept
    assert_parked(mesh, saga_id, "invalid_json")
