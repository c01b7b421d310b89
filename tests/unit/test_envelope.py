"""CloudEvents binary mode (docs/wire-contract.md#headers): headers round trip and decoding
errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from itinerant.errors import MissingHeader, UnsupportedVersion
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import (
    REPLAY_COUNT,
    Envelope,
    InRecord,
    OutMessage,
    parse_type,
    replace_headers,
)
from itinerant.wire.slip import linear

AT = datetime(2027, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def full_envelope() -> Envelope:
    return Envelope(
        id="11111111-1111-4111-8111-111111111111",
        type="itinerant.flights.book.v1",
        source="/itinerant/planner",
        saga_id="saga-1",
        data=b'{"hello": "w\xc3\xb6rld"}',
        time=AT,
        causation_id="cause-1",
        slip=linear("planner", ("flights", "book")).advanced("planner", "m0", AT),
        budget=Budget(max_hops=9, deadline=AT + timedelta(minutes=2), hops=1, tokens=7),
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate="vendor=1",
        dataschema="https://itinerant.dev/schemas/itinerant.trip.v1.json",
        replay_count=2,
    )


def as_record(message: OutMessage, offset: int = 3) -> InRecord:
    return InRecord(message.topic, 1, offset, message.key, message.value, message.headers)


def test_round_trip_through_headers() -> None:
    env = full_envelope()
    message = env.to_message("itinerant.agent.flights")
    assert message.topic == "itinerant.agent.flights"
    assert message.key == b"saga-1"
    assert message.value == env.data
    assert message.header("ce_specversion") == b"1.0"
    assert message.header("content-type") == b"application/json"
    assert message.header(REPLAY_COUNT) == b"2"
    back = Envelope.from_record(as_record(message))
    assert back == env
    assert back.type_name == "itinerant.flights.book"
    assert back.version == 1


def test_minimal_envelope_has_no_optional_headers() -> None:
    env = Envelope(id="i", type="itinerant.x.run.v1", source="/s", saga_id="s", data=b"{}")
    names = [k for k, _ in env.headers()]
    assert names == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "content-type",
        "ce_sagaid",
    ]
    back = Envelope.from_record(as_record(env.to_message("t")))
    assert back.slip is None and back.budget is None and back.replay_count == 0
    assert back.causation_id is None and back.traceparent is None


def test_headers_are_utf8_bytes_and_names_unique() -> None:
    headers = full_envelope().headers()
    names = [k for k, _ in headers]
    assert len(names) == len(set(names))
    for _, value in headers:
        assert isinstance(value, bytes)
        value.decode("utf-8")


@pytest.mark.parametrize(
    "drop",
    [("ce_id",), ("ce_type",), ("ce_source",), ("ce_sagaid",), ("ce_id", "ce_sagaid")],
)
def test_missing_required_headers_are_named(drop: tuple[str, ...]) -> None:
    message = full_envelope().to_message("t")
    headers = [(k, v) for k, v in message.headers if k not in drop]
    with pytest.raises(MissingHeader) as info:
        Envelope.from_record(InRecord("t", 0, 0, None, message.value, headers))
    assert info.value.reason == "missing_header"
    for name in drop:
        assert name in str(info.value)
    for name in {"ce_id", "ce_type", "ce_source", "ce_sagaid"} - set(drop):
        assert name not in str(info.value)


def test_empty_required_header_counts_as_missing() -> None:
    message = full_envelope().to_message("t")
    headers = replace_headers(message.headers, [("ce_sagaid", b"")])
    with pytest.raises(MissingHeader, match="ce_sagaid"):
        Envelope.from_record(InRecord("t", 0, 0, None, message.value, headers))


def test_no_value_is_empty_value() -> None:
    message = full_envelope().to_message("t")
    with pytest.raises(MissingHeader) as info:
        Envelope.from_record(InRecord("t", 0, 0, None, None, message.headers))
    assert info.value.reason == "empty_value"


def test_non_utf8_header_is_undecodable() -> None:
    message = full_envelope().to_message("t")
    headers = replace_headers(message.headers, [("ce_type", b"itinerant.\xff.v1")])
    with pytest.raises(MissingHeader) as info:
        Envelope.from_record(InRecord("t", 0, 0, None, message.value, headers))
    assert info.value.reason == "undecodable"


def test_non_utf8_header_error_names_the_header() -> None:
    # An operator reading x-dlq-error must learn which header is broken.
    message = full_envelope().to_message("t")
    headers = replace_headers(message.headers, [("ce_source", b"/itinerant/\xfe")])
    with pytest.raises(MissingHeader) as info:
        Envelope.from_record(InRecord("t", 0, 0, None, message.value, headers))
    assert "ce_source" in str(info.value)


@pytest.mark.parametrize(
    ("ce_type", "expected"),
    [
        ("itinerant.flights.book.v1", ("itinerant.flights.book", 1)),
        ("itinerant.saga.step_completed.v12", ("itinerant.saga.step_completed", 12)),
        ("a-b.c_d.v0", ("a-b.c_d", 0)),
    ],
)
def test_parse_type(ce_type: str, expected: tuple[str, int]) -> None:
    assert parse_type(ce_type) == expected


@pytest.mark.parametrize(
    "ce_type",
    [
        "itinerant.flights.book",
        "itinerant.flights.book.v",
        "Itinerant.Flights.v1",
        "",
        "v1",
        "x.vA",
    ],
)
def test_parse_type_without_version_is_unsupported(ce_type: str) -> None:
    with pytest.raises(UnsupportedVersion) as info:
        parse_type(ce_type)
    assert info.value.reason == "unsupported_version"


def test_last_header_wins_when_duplicated() -> None:
    message = full_envelope().to_message("t")
    headers = [
        *message.headers,
        ("ce_sagaid", b"saga-2"),
        ("ce_type", b"itinerant.flights.book.v2"),
    ]
    record = InRecord("t", 0, 0, None, message.value, headers)
    assert record.header("ce_sagaid") == b"saga-2"
    env = Envelope.from_record(record)
    assert env.saga_id == "saga-2"
    assert env.version == 2
    out = OutMessage("t", None, b"", headers)
    assert out.header("ce_sagaid") == b"saga-2"
    assert out.header("absent") is None


def test_bad_time_and_replay_count_fall_back() -> None:
    message = full_envelope().to_message("t")
    headers = replace_headers(message.headers, [("ce_time", b"yesterday"), (REPLAY_COUNT, b"x")])
    before = datetime.now(UTC)
    env = Envelope.from_record(InRecord("t", 0, 0, None, message.value, headers))
    assert env.time >= before
    assert env.replay_count == 0
    naive = replace_headers(message.headers, [("ce_time", b"2027-03-01T09:30:00")])
    env = Envelope.from_record(InRecord("t", 0, 0, None, message.value, naive))
    assert env.time == datetime(2027, 3, 1, 9, 30, tzinfo=UTC)


def test_replace_headers_replaces_never_appends_twice() -> None:
    headers = [("a", b"1"), ("traceparent", b"old"), ("b", b"2"), ("traceparent", b"older")]
    assert replace_headers(headers, [("traceparent", b"new")]) == [
        ("a", b"1"),
        ("b", b"2"),
        ("traceparent", b"new"),
    ]


def test_out_message_json_round_trip_with_binary_values() -> None:
    message = OutMessage(
        topic="itinerant.dlq",
        key=b"\x00\xff key",
        value=b"\xff\xfe\x00 not utf-8",
        headers=[("x-bin", b"\x80\x81"), ("empty", b""), ("dup", b"1"), ("dup", b"2")],
    )
    text = message.to_json()
    assert isinstance(text, str)
    assert OutMessage.from_json(text) == message
    no_key = OutMessage("t", None, b"", [])
    assert OutMessage.from_json(no_key.to_json()) == no_key
