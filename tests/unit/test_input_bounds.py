"""Bounded inputs on decode (docs/security.md#bounded-inputs): header count and sizes, saga
ids, and a refused request that names another saga's id."""

from __future__ import annotations

import json

import pytest

from itinerant.coordinator.ingress import Accepted, Refused, read_request
from itinerant.settings import Settings
from itinerant.testing import InMemoryMesh
from itinerant.wire.bounds import InputBounds, InvalidSagaId, OversizedHeader
from itinerant.wire.envelope import Envelope, InRecord, OutMessage
from itinerant.wire.ids import name_id, new_id
from services.contracts.trip import TripRequest

TRIP = {
    "traveller": {"name": "Ada"},
    "origin": "MAD",
    "destination": "LIS",
    "depart_date": "2027-03-12",
    "return_date": "2027-03-15",
}
BOUNDS = InputBounds()


def headers_of(count: int, size: int = 10) -> list[tuple[str, bytes | None]]:
    return [(f"x-h{i}", b"v" * size) for i in range(count)]


def test_the_default_bounds_are_the_settings_defaults() -> None:
    assert InputBounds.of(Settings()) == BOUNDS


def test_headers_within_the_bounds_pass() -> None:
    BOUNDS.check_record([*headers_of(BOUNDS.max_headers - 1), ("ce_sagaid", b"saga-1")])


def test_too_many_headers_are_refused_naming_the_setting() -> None:
    with pytest.raises(OversizedHeader, match="ITINERANT_MAX_HEADERS") as caught:
        BOUNDS.check_headers(headers_of(BOUNDS.max_headers + 1))
    assert caught.value.reason == "oversized_header"
    assert not caught.value.retryable


def test_one_large_header_is_refused() -> None:
    big = [("x-big", b"v" * (BOUNDS.max_header_bytes + 1))]
    with pytest.raises(OversizedHeader, match="ITINERANT_MAX_HEADER_BYTES"):
        BOUNDS.check_headers(big)


def test_the_slip_and_the_budget_have_their_own_caps() -> None:
    BOUNDS.check_headers([("ce_routingslip", b"s" * BOUNDS.max_slip_bytes)])
    with pytest.raises(OversizedHeader, match="ITINERANT_MAX_SLIP_BYTES"):
        BOUNDS.check_headers([("ce_routingslip", b"s" * (BOUNDS.max_slip_bytes + 1))])
    with pytest.raises(OversizedHeader, match="ITINERANT_MAX_BUDGET_BYTES"):
        BOUNDS.check_headers([("ce_budget", b"b" * (BOUNDS.max_budget_bytes + 1))])


def test_the_sum_of_the_headers_is_bounded() -> None:
    each = BOUNDS.max_header_bytes - 10
    count = BOUNDS.max_headers_total_bytes // each + 1
    assert count <= BOUNDS.max_headers
    with pytest.raises(OversizedHeader, match="ITINERANT_MAX_HEADERS_TOTAL_BYTES"):
        BOUNDS.check_headers(headers_of(count, each))


@pytest.mark.parametrize(
    "saga_id",
    ["x" * 201, "saga\x1b[2J", "saga\u202egpj.exe", "line\nbreak"],
    ids=["too-long", "escape", "bidi-override", "newline"],
)
def test_unusable_saga_ids_are_refused(saga_id: str) -> None:
    with pytest.raises(InvalidSagaId):
        BOUNDS.check_record([("ce_sagaid", saga_id.encode())])


def test_an_error_shows_untrusted_text_escaped() -> None:
    with pytest.raises(InvalidSagaId) as caught:
        BOUNDS.check_saga_id("a\x1b]8;;http://x\x07b")
    assert "\x1b" not in str(caught.value) and "\x07" not in str(caught.value)
    assert "\\x1b" in str(caught.value)


def request_record(
    value: bytes, headers: list[tuple[str, bytes | None]] | None = None, offset: int = 3
) -> InRecord:
    return InRecord("itinerant.requests", 0, offset, None, value, headers or [])


def test_ingress_answers_a_request_with_too_many_headers_under_its_position() -> None:
    record = request_record(json.dumps(TRIP).encode(), headers_of(BOUNDS.max_headers + 1))
    read = read_request(record, 65_536, TripRequest)
    assert isinstance(read, Refused) and isinstance(read.error, OversizedHeader)
    assert read.saga_id == read.message_id == name_id("itinerant.requests", 0, 3)


def test_ingress_refuses_an_unusable_saga_header_and_never_uses_it() -> None:
    record = request_record(json.dumps(TRIP).encode(), [("ce_sagaid", b"evil\x1b[31m")])
    read = read_request(record, 65_536, TripRequest)
    assert isinstance(read, Refused) and isinstance(read.error, InvalidSagaId)
    assert read.saga_id == name_id("itinerant.requests", 0, 3)


def test_ingress_refuses_a_request_id_with_control_characters() -> None:
    record = request_record(json.dumps({**TRIP, "request_id": "id\x1b[2J"}).encode())
    read = read_request(record, 65_536, TripRequest)
    assert isinstance(read, Refused) and isinstance(read.error, InvalidSagaId)
    assert read.saga_id == name_id("itinerant.requests", 0, 3)


def test_ingress_accepts_a_normal_request_id() -> None:
    read = read_request(
        request_record(json.dumps({**TRIP, "request_id": "trip-42"}).encode()), 65_536, TripRequest
    )
    assert isinstance(read, Accepted) and read.saga_id == "trip-42"


async def test_a_malformed_request_never_answers_under_another_sagas_id(
    mesh: InMemoryMesh,
) -> None:
    saga_id = mesh.publish_request({**TRIP, "request_id": f"trip-{new_id()}"})
    await mesh.run()
    before = mesh.results()[saga_id]
    assert before["status"] == "completed", before
    mesh.publish(
        OutMessage(
            mesh.settings.requests_topic,
            None,
            json.dumps({"request_id": saga_id, "origin": 7}).encode(),
            [],
        )
    )
    await mesh.run()
    results = [m for m in mesh.log[mesh.settings.results_topic] if m.key == saga_id.encode()]
    assert len(results) == 1  # the finished saga's result stands alone under its id
    saga = mesh.saga(saga_id)
    assert saga is not None and saga.state.value == "completed"
    position = name_id(mesh.settings.requests_topic, 0, 1)
    assert mesh.results()[position]["status"] == "rejected"  # answered under its own position
    assert mesh.dead_letters()[-1].header("x-dlq-reason") == b"invalid_request"


async def test_an_agent_dead_letters_a_message_with_too_many_headers_and_goes_on(
    mesh: InMemoryMesh,
) -> None:
    topic = mesh.settings.agent_topic("validator")
    crafted = Envelope(
        id=new_id(),
        type="itinerant.step.v1",
        source="/itinerant/coordinator",
        saga_id=new_id(),
        data=b"{}",
    ).to_message(topic)
    stuffed = OutMessage(
        topic,
        crafted.key,
        crafted.value,
        [*crafted.headers, *headers_of(mesh.settings.max_headers)],
    )
    processed = await mesh.deliver(mesh.signed(stuffed, "coordinator"))
    assert processed is not None and processed.outcome == "dead_lettered"
    await mesh.run()
    assert mesh.dead_letters()[-1].header("x-dlq-reason") == b"oversized_header"
    saga_id = mesh.publish_request(TRIP | {"request_id": f"trip-{new_id()}"})
    await mesh.run()
    assert mesh.results()[saga_id]["status"] == "completed"
