"""Dead letters that always fit: ``dead_letter`` cuts a copy over the limit and says so,
``shrink`` is what the worker sends after Kafka refused one as too large, and ``dlq show`` and
``dlq replay`` of a cut copy point at (and replay from) the original record."""

from __future__ import annotations

import json
from typing import Any

import pytest

from itinerant.cli import dlq as cli
from itinerant.errors import HandlerError, MessageTooLarge
from itinerant.operators import dlq_actions as da
from itinerant.runtime import dlq
from itinerant.runtime.dlq import dead_letter, message_bytes, shrink
from itinerant.wire.envelope import REPLAY_COUNT, Envelope, InRecord, OutMessage
from tests.unit.test_dlq_cli import FakeKafka, run

LIMIT = 1_000_000
SAGA = "5b0a4c3e-0000-4000-8000-0000000000aa"
TOPIC = "itinerant.agent.flights"


def original(
    value: bytes,
    *,
    extra: list[tuple[str, bytes]] = (),
    key: bytes | None = None,  # type: ignore[assignment]
) -> InRecord:
    env = Envelope(
        id="m-big",
        type="itinerant.flights.book.v1",
        source="/itinerant/planner",
        saga_id=SAGA,
        data=value,
    )
    key = key if key is not None else SAGA.encode()
    return InRecord(TOPIC, 2, 41, key, value, [*env.headers(), *extra])


def letter(record: InRecord, error: Any = None) -> OutMessage:
    return dead_letter(
        record,
        error or MessageTooLarge("message of many bytes exceeds ITINERANT_MAX_MESSAGE_BYTES"),
        service="flights",
        dlq_topic="itinerant.dlq",
        attempts=1,
        saga_id=SAGA,
        max_bytes=LIMIT,
    )


def test_a_copy_that_fits_is_the_record_unchanged() -> None:
    record = original(b'{"ok": true}')
    out = letter(record)
    assert out.value == record.value and out.key == record.key
    assert out.header(dlq.TRUNCATED) is None
    assert [h for h in out.headers if not h[0].startswith("x-dlq-")] == record.headers


def test_an_oversized_payload_is_cut_to_fit_and_says_so() -> None:
    record = original(b"x" * (LIMIT + 5000))
    out = letter(record, HandlerError("e" * 5000))
    assert message_bytes(out) <= LIMIT
    assert out.header(dlq.TRUNCATED) == b"payload"
    assert out.value == record.value[: len(out.value)] and len(out.value) > LIMIT // 2
    assert int(out.header(dlq.ORIGINAL_VALUE_BYTES) or 0) == LIMIT + 5000
    assert int(out.header(dlq.ORIGINAL_BYTES) or 0) > LIMIT + 5000
    # the pointer to the original and its identity survive
    assert out.header(dlq.ORIGIN_TOPIC) == TOPIC.encode()
    assert out.header(dlq.ORIGIN_PARTITION) == b"2" and out.header(dlq.ORIGIN_OFFSET) == b"41"
    assert out.header("ce_id") == b"m-big" and out.header("ce_sagaid") == SAGA.encode()
    assert len((out.header(dlq.ERROR) or b"").decode()) == dlq.MAX_ERROR_CHARS


def test_oversized_headers_go_first_and_the_payload_stays_whole_if_it_then_fits() -> None:
    extra = [("x-huge", b"h" * 700_000), ("x-big", b"b" * 200_000), ("x-small", b"s" * 100)]
    record = original(b"v" * 300_000, extra=extra)
    out = letter(record)
    assert message_bytes(out) <= LIMIT
    assert out.header(dlq.TRUNCATED) == b"headers"
    assert out.header(dlq.DROPPED_HEADERS) == b"x-huge,x-big"
    assert out.header("x-huge") is None and out.header("x-big") is None
    assert out.header("x-small") == b"s" * 100 and out.header("ce_id") == b"m-big"
    assert out.value == record.value


def test_many_headers_go_largest_first_then_the_payload() -> None:
    extra = [(f"x-h{i}", b"h" * (9000 + i)) for i in range(120)]
    record = original(b"v" * 300_000, extra=extra)
    out = letter(record)
    assert message_bytes(out) <= LIMIT
    assert out.header(dlq.TRUNCATED) == b"payload,headers"
    dropped = (out.header(dlq.DROPPED_HEADERS) or b"").decode().split(",")
    assert dropped[:3] == ["x-h119", "x-h118", "x-h117"] and out.header("x-h0") is not None
    assert out.header("ce_id") == b"m-big" and len(out.value) < 300_000


def test_an_oversized_key_is_dropped() -> None:
    out = letter(original(b"v" * LIMIT, key=b"k" * 5000))
    assert out.key is None and out.header(dlq.TRUNCATED) == b"payload,key"
    assert message_bytes(out) <= LIMIT


def test_old_dlq_headers_of_the_original_never_pass_for_ours() -> None:
    record = original(b"{}", extra=[(dlq.TRUNCATED, b"payload"), ("X-DLQ-Reason", b"forged")])
    out = letter(record)
    assert out.header(dlq.TRUNCATED) is None and out.header("X-DLQ-Reason") is None


def test_shrink_sends_headers_only_then_identity_only_then_gives_up() -> None:
    extra = [("x-big", b"b" * 5000), ("x-note", b"n" * 10)]
    copy = letter(original(b"v" * 1000, extra=extra), HandlerError("e" * 1500))
    first = shrink(copy, "MSG_SIZE_TOO_LARGE", dlq_topic="itinerant.dlq", service="flights")
    assert first is not None and first.value == b""
    assert first.header(dlq.TRUNCATED) == b"payload,headers"
    assert first.header("x-big") is None and first.header("x-note") == b"n" * 10
    assert first.header(dlq.DROPPED_HEADERS) == b"x-big"
    assert first.header(dlq.ORIGIN_OFFSET) == b"41"
    second = shrink(first, "again", dlq_topic="itinerant.dlq", service="flights")
    assert second is not None and second.header("x-note") is None
    assert second.header("ce_id") == b"m-big" and len(second.header(dlq.ERROR) or b"") == 200
    dropped = (second.header(dlq.DROPPED_HEADERS) or b"").decode().split(",")
    assert dropped[0] == "x-big" and "x-note" in dropped and "ce_id" not in dropped
    assert shrink(second, "again", dlq_topic="itinerant.dlq", service="flights") is None


def test_shrink_turns_a_refused_output_into_a_dead_letter_that_points_nowhere() -> None:
    output = OutMessage("itinerant.agent.hotels", b"k", b"{}", [("ce_id", b"o-1")])
    out = shrink(output, "MSG_SIZE_TOO_LARGE", dlq_topic="itinerant.dlq", service="flights")
    assert out is not None and out.topic == "itinerant.dlq" and out.value == b""
    assert out.header(dlq.REASON) == b"message_too_large"
    assert out.header(dlq.ORIGIN_TOPIC) == b"itinerant.agent.hotels"
    assert out.header(dlq.ORIGIN_OFFSET) == b"-1" and out.header(dlq.TRUNCATED) == b"payload"
    entry = da.DlqEntry.from_record(InRecord(out.topic, 0, 0, out.key, out.value, out.headers))
    assert entry.is_truncated and not entry.has_origin_offset


# --- the operator's side --------------------------------------------------------------------


def cut_entry(extra: list[tuple[str, bytes]] = ()) -> tuple[da.DlqEntry, InRecord]:  # type: ignore[assignment]
    record = original(b'{"big": "' + b"x" * LIMIT + b'"}', extra=list(extra))
    out = letter(record)
    entry = da.DlqEntry.from_record(InRecord(out.topic, 0, 5, out.key, out.value, out.headers))
    return entry, record


def test_show_says_the_copy_is_truncated_and_how_to_read_the_original(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry, _ = cut_entry()
    FakeKafka([entry], []).install(monkeypatch)
    shown = run("show", entry.id)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "truncated copy" in text and "payload" in text
    assert f"itinerant kcat -C -t {TOPIC} -p 2 -o 41 -c 1" in text
    assert f"itinerant dlq replay {entry.id}" in text
    listed = json.loads(run("list", "--json").stdout)
    assert listed[0]["truncated"] == ["payload"] and listed[0]["original_bytes"] > LIMIT


def test_replay_of_a_cut_copy_refuses_when_the_original_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry, _ = cut_entry()
    kafka = FakeKafka([entry], [])
    kafka.install(monkeypatch)
    monkeypatch.setattr(cli, "read_original", lambda *_a, **_k: None)
    for args in ((entry.id,), (entry.id, "--force"), ("--all",)):
        refused = run("replay", *args)
        assert refused.exit_code == 3, refused.output
        assert "truncated copy" in " ".join(refused.stderr.split())
    assert not kafka.sent


def test_replay_of_a_cut_copy_sends_the_original_read_from_its_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry, record = cut_entry()
    kafka = FakeKafka([entry], [])
    kafka.install(monkeypatch)
    asked: list[tuple[str, int, int]] = []

    def read(_settings: Any, topic: str, partition: int, offset: int, **_: Any) -> InRecord:
        asked.append((topic, partition, offset))
        return record

    monkeypatch.setattr(cli, "read_original", read)
    done = run("replay", entry.id)
    assert done.exit_code == 0, done.output
    assert asked == [(TOPIC, 2, 41)]
    replay = kafka.sent[0]
    assert replay.topic == TOPIC and replay.value == record.value and replay.key == record.key
    assert replay.header(REPLAY_COUNT) == b"1" and replay.header(dlq.TRUNCATED) is None


def test_replay_of_a_cut_copy_refuses_another_message_at_that_offset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entry, record = cut_entry()
    other = InRecord(
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        [(k, b"someone-else" if k == "ce_id" else v) for k, v in record.headers],
    )
    kafka = FakeKafka([entry], [])
    kafka.install(monkeypatch)
    monkeypatch.setattr(cli, "read_original", lambda *_a, **_k: other)
    refused = run("replay", entry.id)
    assert refused.exit_code == 3 and "another message" in " ".join(refused.stderr.split())
    assert not kafka.sent
