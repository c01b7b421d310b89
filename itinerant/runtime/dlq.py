"""Dead-lettering (docs/architecture.md#the-dead-letter-topic): the original record, unchanged,
plus ``x-dlq-*`` headers, cut to fit the largest record Kafka takes from us.

A copy that would not fit loses what it must (an oversized key, the largest original headers,
the end of the payload) and says so in ``x-dlq-truncated``; its origin topic, partition and
offset point at the original record, which stays readable there within the topic's retention.
A copy the broker still refuses is sent again headers only (:func:`shrink`), so no dead letter
stays in an outbox (docs/architecture.md#oversized-dead-letters).
"""

from __future__ import annotations

from datetime import UTC, datetime

from itinerant.errors import ItinerantError
from itinerant.wire.envelope import Headers, InRecord, OutMessage, replace_headers

MAX_ERROR_CHARS = 2000

REASON = "x-dlq-reason"
ERROR_TYPE = "x-dlq-error-type"
ERROR = "x-dlq-error"
SERVICE = "x-dlq-service"
ORIGIN_TOPIC = "x-dlq-origin-topic"
ORIGIN_PARTITION = "x-dlq-origin-partition"
ORIGIN_OFFSET = "x-dlq-origin-offset"
ATTEMPTS = "x-dlq-attempts"
AT = "x-dlq-at"
TRUNCATED = "x-dlq-truncated"
ORIGINAL_BYTES = "x-dlq-original-bytes"
ORIGINAL_VALUE_BYTES = "x-dlq-original-value-bytes"
DROPPED_HEADERS = "x-dlq-dropped-headers"
DLQ_HEADERS = (
    REASON,
    ERROR_TYPE,
    ERROR,
    SERVICE,
    ORIGIN_TOPIC,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    ATTEMPTS,
    AT,
)
#: Only on a copy cut to fit (docs/wire-contract.md#dlq-headers).
TRUNCATION_HEADERS = (TRUNCATED, ORIGINAL_BYTES, ORIGINAL_VALUE_BYTES, DROPPED_HEADERS)

#: Bytes left for the record's own framing (lengths, timestamps, the batch header).
RECORD_OVERHEAD = 1024
#: Bytes counted per header on top of its name and value (two varint lengths, rounded up).
HEADER_OVERHEAD = 10
#: A longer key is dropped from a copy that must be cut (it only chooses the DLQ partition).
MAX_KEY_BYTES = 1024
#: An original header longer than this is dropped from a copy that must be cut (the largest
#: header we write, the routing slip, is bounded by ITINERANT_MAX_SLIP_BYTES, 8 KiB by default).
OVERSIZED_HEADER_BYTES = 16 * 1024
#: A headers-only copy keeps original headers up to this size each.
MINIMAL_HEADER_BYTES = 1024
#: The headers a last-resort copy keeps besides ``x-dlq-*``: who sent it, for which saga.
IDENTITY_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_sagaid", "ce_specversion")
_MAX_DROPPED_LIST = 1000


def record_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What a record weighs against Kafka's limit, framing included (an upper estimate)."""
    size = RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    return size + sum(len(n.encode()) + len(v) + HEADER_OVERHEAD for n, v in headers)


def message_bytes(message: OutMessage) -> int:
    return record_bytes(message.key, message.value, message.headers)


def is_truncated(headers: Headers) -> bool:
    return any(name == TRUNCATED for name, _ in headers)


def dead_letter(
    record: InRecord,
    error: ItinerantError,
    *,
    service: str,
    dlq_topic: str,
    attempts: int,
    saga_id: str | None,
    max_bytes: int,
) -> OutMessage:
    """The dead letter of ``record``: the whole record when it fits ``max_bytes`` (the largest
    record our producers send, ``Settings.record_max_bytes``), else a copy cut to fit."""
    text = error.describe()
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    extra: Headers = [
        (REASON, error.reason.encode()),
        (ERROR_TYPE, type(error).__name__.encode()),
        (ERROR, text.encode()),
        (SERVICE, service.encode()),
        (ORIGIN_TOPIC, record.topic.encode()),
        (ORIGIN_PARTITION, str(record.partition).encode()),
        (ORIGIN_OFFSET, str(record.offset).encode()),
        (ATTEMPTS, str(attempts).encode()),
        (AT, datetime.now(UTC).isoformat().encode()),
    ]
    key = record.key if record.key is not None else (saga_id.encode() if saga_id else None)
    copy = OutMessage(
        topic=dlq_topic,
        key=key,
        value=record.value or b"",
        headers=replace_headers(_without_dlq(record.headers), extra),
    )
    if message_bytes(copy) <= max_bytes:
        return copy
    original = record_bytes(record.key, record.value, record.headers)
    return _cut(copy, max_bytes, original, len(record.value or b""))


def _cut(copy: OutMessage, max_bytes: int, original: int, original_value: int) -> OutMessage:
    """``copy`` cut to fit: first an oversized key and oversized original headers, then the
    largest other headers until the rest fits without payload, then the payload to the room
    left."""
    cut: list[str] = []
    key = copy.key
    if key is not None and len(key) > MAX_KEY_BYTES:
        key, cut = None, ["key"]
    own = [(n, v) for n, v in copy.headers if not n.startswith("x-dlq-")]
    ours = [(n, v) for n, v in copy.headers if n.startswith("x-dlq-")]
    marks: Headers = [
        (TRUNCATED, b"payload,headers,key"),  # the longest it can be, for the sums below
        (ORIGINAL_BYTES, str(original).encode()),
        (ORIGINAL_VALUE_BYTES, str(original_value).encode()),
    ]
    dropped = [n for n, v in own if len(v) > OVERSIZED_HEADER_BYTES]
    own = [(n, v) for n, v in own if len(v) <= OVERSIZED_HEADER_BYTES]
    while own and record_bytes(key, b"", [*own, *ours, *marks, *_dropped(dropped)]) > max_bytes:
        largest = max(range(len(own)), key=lambda i: len(own[i][1]) + len(own[i][0]))
        dropped.append(own.pop(largest)[0])
    if dropped:
        cut.append("headers")
    headers = [*own, *ours, *marks, *_dropped(dropped)]
    room = max(0, max_bytes - record_bytes(key, b"", headers))
    value = copy.value[:room]
    if len(value) < len(copy.value):
        cut.insert(0, "payload")
    marks[0] = (TRUNCATED, ",".join(cut).encode())
    return OutMessage(copy.topic, key, value, [*own, *ours, *marks, *_dropped(dropped)])


def _dropped(names: list[str]) -> Headers:
    if not names:
        return []
    listing = ",".join(dict.fromkeys(names))
    if len(listing) > _MAX_DROPPED_LIST:
        listing = listing[: _MAX_DROPPED_LIST - 3] + "..."
    return [(DROPPED_HEADERS, listing.encode())]


def _without_dlq(headers: Headers) -> Headers:
    return [(n, v) for n, v in headers if not n.lower().startswith("x-dlq-")]


def shrink(message: OutMessage, why: str, *, dlq_topic: str, service: str) -> OutMessage | None:
    """What to send instead of ``message`` after Kafka refused it as too large, or ``None`` when
    nothing smaller is left to try.

    A dead letter is sent again headers only, then with only its ``x-dlq-*`` and identity
    headers. Any other output (its size was checked before, so only its headers can be at
    fault) becomes such a headers-only dead letter of itself, pointing nowhere (offset -1), so
    an operator sees what was lost instead of an outbox that retries for ever."""
    if message.topic != dlq_topic:
        return _lost_output(message, why, dlq_topic=dlq_topic, service=service)
    own = [(n, v) for n, v in message.headers if not n.startswith("x-dlq-")]
    ours = [(n, v) for n, v in message.headers if n.startswith("x-dlq-") and n not in _MARKS]
    original = message.header(ORIGINAL_BYTES) or str(message_bytes(message)).encode()
    original_value = message.header(ORIGINAL_VALUE_BYTES) or str(len(message.value)).encode()
    earlier = (message.header(DROPPED_HEADERS) or b"").decode(errors="replace")
    dropped = [n for n in earlier.split(",") if n]
    small = all(len(v) <= MINIMAL_HEADER_BYTES for _, v in own)
    if message.value or not small:
        keep = [(n, v) for n, v in own if len(v) <= MINIMAL_HEADER_BYTES]
    elif any(n not in IDENTITY_HEADERS for n, _ in own) or len(_error(ours)) > 200:
        keep = [(n, v) for n, v in own if n in IDENTITY_HEADERS]
        ours = [(n, v[:200] if n == ERROR else v) for n, v in ours]
    else:
        return None
    dropped += [n for n, v in own if (n, v) not in keep]
    key = message.key if message.key is not None and len(message.key) <= MAX_KEY_BYTES else None
    cut = ["payload"] + (["headers"] if dropped else []) + (["key"] if key != message.key else [])
    marks: Headers = [
        (TRUNCATED, ",".join(dict.fromkeys(cut)).encode()),
        (ORIGINAL_BYTES, original),
        (ORIGINAL_VALUE_BYTES, original_value),
    ]
    del why  # the caller logs it; the copy keeps its own x-dlq-error
    return OutMessage(message.topic, key, b"", [*keep, *ours, *marks, *_dropped(dropped)])


_MARKS = TRUNCATION_HEADERS


def _error(headers: Headers) -> bytes:
    for name, value in headers:
        if name == ERROR:
            return value
    return b""


def _lost_output(message: OutMessage, why: str, *, dlq_topic: str, service: str) -> OutMessage:
    text = (
        f"kafka refused this {message_bytes(message)}-byte output to {message.topic} as too "
        f"large ({why}); it was not delivered: find what made its headers grow, then send it "
        "again from its cause"
    )[:MAX_ERROR_CHARS]
    ours: Headers = [
        (REASON, b"message_too_large"),
        (ERROR_TYPE, b"MessageTooLarge"),
        (ERROR, text.encode()),
        (SERVICE, service.encode()),
        (ORIGIN_TOPIC, message.topic.encode()),
        (ORIGIN_PARTITION, b"-1"),
        (ORIGIN_OFFSET, b"-1"),
        (ATTEMPTS, b"1"),
        (AT, datetime.now(UTC).isoformat().encode()),
    ]
    copy = OutMessage(dlq_topic, message.key, message.value, [*message.headers, *ours])
    return shrink(copy, why, dlq_topic=dlq_topic, service=service) or copy
