"""CloudEvents 1.0 in Kafka binary mode (docs/wire-contract.md#headers): attributes in headers, the
payload as value."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from itinerant.errors import MissingHeader, UnsupportedVersion
from itinerant.wire import fastjson
from itinerant.wire.bounds import DEFAULT_BOUNDS, InputBounds
from itinerant.wire.budget import Budget
from itinerant.wire.slip import Slip

Headers = list[tuple[str, bytes]]

SPEC_VERSION = "1.0"
REPLAY_COUNT = "x-replay-count"
_TYPE = re.compile(r"^(?P<name>[a-z0-9_.-]+)\.v(?P<version>[0-9]+)$")


def parse_type(ce_type: str) -> tuple[str, int]:
    """``itinerant.orders.place.v1`` -> (``itinerant.orders.place``, 1)."""
    match = _TYPE.match(ce_type)
    if not match:
        raise UnsupportedVersion(f"message type {ce_type!r} has no version suffix like '.v1'")
    return match["name"], int(match["version"])


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class InRecord:
    """A record as consumed, broker-agnostic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers

    def header(self, name: str) -> bytes | None:
        for key, value in reversed(self.headers):  # the last one wins if a client appended
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A record to produce. Serialisable, so an outbox can keep it until it is acknowledged."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = field(default_factory=list)

    def header(self, name: str) -> bytes | None:
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None

    def to_json(self) -> str:
        return fastjson.dumps_text(
            {
                "topic": self.topic,
                "key": _b64(self.key),
                "value": _b64(self.value),
                "headers": [[k, _b64(v)] for k, v in self.headers],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> OutMessage:
        raw = fastjson.loads(text)
        return cls(
            topic=raw["topic"],
            key=_unb64(raw["key"]),
            value=_unb64(raw["value"]) or b"",
            headers=[(k, _unb64(v) or b"") for k, v in raw["headers"]],
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """One CloudEvent: attributes plus the JSON payload bytes."""

    id: str
    type: str
    source: str
    saga_id: str
    data: bytes
    time: datetime = field(default_factory=now_utc)
    causation_id: str | None = None
    slip: Slip | None = None
    budget: Budget | None = None
    traceparent: str | None = None
    tracestate: str | None = None
    dataschema: str | None = None
    replay_count: int = 0
    #: The customer identity the saga acts for (``ce_customer``, set by the coordinator).
    customer: str | None = None
    #: The verified sender (from its signature; never read from a header as such).
    signer: str | None = None

    @property
    def inbox_key(self) -> str:
        """What deduplication is keyed on: the verified sender and the id, so nobody can claim
        another sender's ids in advance (docs/security.md#messages)."""
        return f"{self.signer}/{self.id}" if self.signer else self.id

    @property
    def type_name(self) -> str:
        return parse_type(self.type)[0]

    @property
    def version(self) -> int:
        return parse_type(self.type)[1]

    def evolve(self, **changes: object) -> Envelope:
        return replace(self, **changes)  # type: ignore[arg-type]

    def headers(self, max_slip_bytes: int = 8192) -> Headers:
        headers: Headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", self.time.isoformat().encode()),
            ("content-type", b"application/json"),
            ("ce_sagaid", self.saga_id.encode()),
        ]
        optional: Sequence[tuple[str, str | None]] = (
            ("ce_causationid", self.causation_id),
            ("ce_customer", self.customer),
            ("ce_dataschema", self.dataschema),
            ("traceparent", self.traceparent),
            ("tracestate", self.tracestate),
        )
        headers.extend((k, v.encode()) for k, v in optional if v)
        if self.slip is not None:
            headers.append(("ce_routingslip", self.slip.encode(max_slip_bytes)))
        if self.budget is not None:
            headers.append(("ce_budget", self.budget.encode()))
        if self.replay_count:
            headers.append((REPLAY_COUNT, str(self.replay_count).encode()))
        return headers

    def to_message(self, topic: str, max_slip_bytes: int = 8192) -> OutMessage:
        return OutMessage(
            topic=topic,
            key=self.saga_id.encode(),
            value=self.data,
            headers=self.headers(max_slip_bytes),
        )

    @classmethod
    def from_record(cls, record: InRecord, bounds: InputBounds = DEFAULT_BOUNDS) -> Envelope:
        """Decode headers; raise a poison-message error naming what is missing or wrong."""
        bounds.check_record(record.headers)  # docs/security.md#bounded-inputs
        required = ("ce_id", "ce_type", "ce_source", "ce_sagaid")
        values = {name: _text(record.header(name), name) for name in required}
        missing = [name for name, value in values.items() if not value]
        if missing:
            raise MissingHeader(f"message lacks required header(s) {missing}")
        if record.value is None:
            raise MissingHeader("message has no value (payload)", reason="empty_value")
        slip_raw = record.header("ce_routingslip")
        budget_raw = record.header("ce_budget")
        return cls(
            id=values["ce_id"] or "",
            type=values["ce_type"] or "",
            source=values["ce_source"] or "",
            saga_id=values["ce_sagaid"] or "",
            data=record.value,
            time=_time(_text(record.header("ce_time"), "ce_time")),
            causation_id=_text(record.header("ce_causationid"), "ce_causationid"),
            slip=Slip.decode(slip_raw) if slip_raw else None,
            budget=Budget.decode(budget_raw) if budget_raw else None,
            traceparent=_text(record.header("traceparent"), "traceparent"),
            tracestate=_text(record.header("tracestate"), "tracestate"),
            dataschema=_text(record.header("ce_dataschema"), "ce_dataschema"),
            customer=_text(record.header("ce_customer"), "ce_customer"),
            replay_count=_int(_text(record.header(REPLAY_COUNT), REPLAY_COUNT)),
        )


def _text(raw: bytes | None, name: str) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MissingHeader(f"header {name!r} is not UTF-8", reason="undecodable") from exc


def _time(text: str | None) -> datetime:
    if not text:
        return now_utc()
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return now_utc()
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _int(text: str | None) -> int:
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def replace_headers(headers: Iterable[tuple[str, bytes]], updates: Headers) -> Headers:
    """Headers with every name in ``updates`` replaced (never appended twice)."""
    names = {k for k, _ in updates}
    return [(k, v) for k, v in headers if k not in names] + list(updates)
