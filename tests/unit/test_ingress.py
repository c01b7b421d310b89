"""Ingress (coordinator/ingress.py): any request becomes a valid request or a clear refusal."""

from __future__ import annotations

import json

import pytest

from itinerant.coordinator.ingress import Accepted, Refused
from itinerant.coordinator.ingress import read_request as read_any
from itinerant.wire.envelope import InRecord
from itinerant.wire.envelope import InRecord as _Record
from itinerant.wire.ids import name_id
from services.contracts.trip import TripRequest

TOPIC = "itinerant.requests"


def read_request(record: _Record, max_bytes: int) -> Accepted | Refused:
    """Ingress as the travel mesh runs it: its request model."""
    return read_any(record, max_bytes, TripRequest)


MAX = 4096
GOOD = {
    "traveller": {"name": "Ada"},
    "origin": "MAD",
    "destination": "LIS",
    "depart_date": "2027-03-12",
    "return_date": "2027-03-15",
}


def record(
    value: bytes | None,
    headers: list[tuple[str, bytes]] | None = None,
    *,
    partition: int = 0,
    offset: int = 7,
) -> InRecord:
    return InRecord(TOPIC, partition, offset, None, value, headers or [])


def body(**changes: object) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def refused(read: Accepted | Refused) -> Refused:
    assert isinstance(read, Refused), read
    return read


def test_bare_json_is_accepted_with_a_position_id() -> None:
    read = read_request(record(body()), MAX)
    assert isinstance(read, Accepted)
    assert read.request.origin == "MAD"
    assert read.request.traveller.name == "Ada"
    assert read.message_id == name_id(TOPIC, 0, 7)
    assert read.saga_id == read.message_id
    assert read.traceparent is None and read.tracestate is None


def test_free_text_request_is_accepted() -> None:
    value = json.dumps({"traveller": {"name": "Al"}, "text": "Rome from London"}).encode()
    read = read_request(record(value), MAX)
    assert isinstance(read, Accepted)
    assert read.request.text == "Rome from London"


def test_cloudevents_headers_are_used() -> None:
    headers = [
        ("ce_type", b"itinerant.request.v1"),
        ("ce_id", b"msg-1"),
        ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ("tracestate", b"k=v"),
    ]
    read = read_request(record(body(), headers), MAX)
    assert isinstance(read, Accepted)
    assert read.message_id == "msg-1"
    assert read.traceparent == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert read.tracestate == "k=v"


@pytest.mark.parametrize(
    ("value", "reason", "advice"),
    [
        (b"this is not json", "invalid_json", "publish a JSON object"),
        (b"\xff\xfe\xfa", "invalid_json", "publish a JSON object"),
        (b"{", "invalid_json", "examples/requests"),
        (b"", "empty_value", "publish a JSON object"),
        (None, "empty_value", "publish a JSON object"),
        (b"[1, 2, 3]", "invalid_request", "schemas/"),
        (b'"a string"', "invalid_request", "schemas/"),
        (b"42", "invalid_request", "schemas/"),
        (b"null", "invalid_request", "schemas/"),
        (b'{"hello": "world"}', "invalid_request", "schemas/itinerant.request.v1.json"),
        (body(origin="Madrid"), "invalid_request", "schemas/itinerant.request.v1.json"),
        (body(travellers=0), "invalid_request", "examples/requests"),
    ],
)
def test_refusals_have_reason_and_advice(value: bytes | None, reason: str, advice: str) -> None:
    read = refused(read_request(record(value), MAX))
    assert read.error.reason == reason
    assert advice in read.error.describe()


def test_deeply_nested_json_is_refused_not_raised() -> None:
    # json.loads raises RecursionError on deep nesting; the ingress must still refuse cleanly
    # (otherwise the exception escapes handle_request and the client never gets a result).
    read = refused(read_request(record(b"[" * 3000), MAX))
    assert read.error.reason == "invalid_json"


def test_missing_fields_are_named() -> None:
    value = json.dumps({"traveller": {"name": "Ada"}, "origin": "MAD"}).encode()
    read = refused(read_request(record(value), MAX))
    assert read.error.reason == "invalid_request"
    text = read.error.describe()
    for field in ("destination", "depart_date", "return_date"):
        assert field in text
    assert "text" in text  # the alternative: a free-text ask

    no_traveller = {k: v for k, v in GOOD.items() if k != "traveller"}
    read = refused(read_request(record(json.dumps(no_traveller).encode()), MAX))
    assert "traveller" in str(read.error)
    assert "Field required" in str(read.error)


def test_wrong_shape_names_the_bad_field() -> None:
    read = refused(read_request(record(body(travellers="many", colour="red")), MAX))
    assert "travellers" in str(read.error)
    assert "colour" in str(read.error)


@pytest.mark.parametrize(
    "ce_type",
    [b"itinerant.request.v2", b"itinerant.request.v0", b"itinerant.trip.v1", b"itinerant.request"],
)
def test_unknown_type_or_version_is_unsupported(ce_type: bytes) -> None:
    read = refused(read_request(record(body(), [("ce_type", ce_type)]), MAX))
    assert read.error.reason == "unsupported_version"
    assert "upgrade" in read.error.describe() or ".v1" in read.error.describe()


def test_oversized_request_is_message_too_large() -> None:
    value = body(text="x" * 1900, traveller={"name": "y" * 100})
    value = value + b" " * (MAX + 1 - len(value))
    read = refused(read_request(record(value), MAX))
    assert read.error.reason == "message_too_large"
    assert str(MAX) in str(read.error)
    assert "ITINERANT_MAX_MESSAGE_BYTES" in read.error.describe()
    # exactly at the limit is fine (the oversize check is not off by one)
    at_limit = body() + b" " * (MAX - len(body()))
    assert isinstance(read_request(record(at_limit), MAX), Accepted)


def test_saga_id_precedence() -> None:
    all_ids = [("ce_id", b"ce-id"), ("ce_sagaid", b"ce-saga")]
    read = read_request(record(body(request_id="req-1"), all_ids), MAX)
    assert isinstance(read, Accepted)
    assert (read.saga_id, read.message_id) == ("req-1", "ce-id")

    read = read_request(record(body(), all_ids), MAX)
    assert isinstance(read, Accepted)
    assert read.saga_id == "ce-saga"

    read = read_request(record(body(), [("ce_id", b"ce-id")]), MAX)
    assert isinstance(read, Accepted)
    assert read.saga_id == "ce-id"

    read = read_request(record(body()), MAX)
    assert isinstance(read, Accepted)
    assert read.saga_id == name_id(TOPIC, 0, 7)


def test_empty_or_non_utf8_id_headers_are_ignored() -> None:
    headers = [("ce_id", b""), ("ce_sagaid", b"\xff\xfe")]
    read = read_request(record(body(), headers), MAX)
    assert isinstance(read, Accepted)
    assert read.saga_id == read.message_id == name_id(TOPIC, 0, 7)


def test_position_id_is_stable_and_distinct() -> None:
    first = read_request(record(body(), partition=2, offset=99), MAX)
    again = read_request(record(body(), partition=2, offset=99), MAX)
    other_offset = read_request(record(body(), partition=2, offset=100), MAX)
    other_partition = read_request(record(body(), partition=3, offset=99), MAX)
    assert first.saga_id == again.saga_id
    assert len({first.saga_id, other_offset.saga_id, other_partition.saga_id}) == 3
    # Refusals get the same stable id, so a redelivered bad request maps to the same saga.
    bad = read_request(record(b"nope", partition=2, offset=99), MAX)
    assert bad.saga_id == first.saga_id


def test_refused_saga_id_follows_headers() -> None:
    read = refused(read_request(record(b"nope", [("ce_sagaid", b"s-9"), ("ce_id", b"m-9")]), MAX))
    assert (read.saga_id, read.message_id) == ("s-9", "m-9")


def test_refusal_keeps_the_clients_request_id() -> None:
    # A kcat user who sent {"request_id": "mine", ...} waits for a result keyed "mine".
    value = json.dumps({"request_id": "mine", "traveller": {"name": "Ada"}}).encode()
    read = refused(read_request(record(value), MAX))
    assert read.saga_id == "mine"
