"""The two kinds of record behind the operator's DLQ view, read without any Kafka I/O.

A ``DlqEntry`` is a record of the ``dlq`` topic with its ``x-dlq-*`` and CloudEvents headers
read and a stable short id; an ``Action`` is what an operator did to an entry (replayed,
discarded), a JSON record keyed by entry id on the ``dlq.actions`` topic, so every operator on
every machine sees the same history (see docs/wire-contract.md#dlq-headers and
docs/wire-contract.md#dlq-actions).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from itinerant.runtime import dlq
from itinerant.wire.envelope import REPLAY_COUNT, Headers, InRecord, OutMessage

ACTIONS_TOPIC = "dlq.actions"
ENTRY_ID_LENGTH = 12

_ENTRY_NAMESPACE = uuid.UUID("0b0c6d2e-3f57-4c3e-9a8e-7d1f2b6c9e40")

ActionKind = Literal["replayed", "discarded"]


def entry_id(
    origin_topic: str,
    origin_partition: int,
    origin_offset: int,
    ce_id: str | None,
    extra: str = "",
) -> str:
    """Stable short id of a dead letter: first 12 hex digits of a uuid5 of where it came from.

    ``extra`` disambiguates records that have no real origin position (a failed compensation is
    dead-lettered with partition and offset -1).
    """
    parts = [origin_topic, str(origin_partition), str(origin_offset), ce_id or ""]
    if extra:
        parts.append(extra)
    return uuid.uuid5(_ENTRY_NAMESPACE, "/".join(parts)).hex[:ENTRY_ID_LENGTH]


def _text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", errors="replace")


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None and text != "" else default
    except ValueError:
        return default


def _count(text: str | None) -> int | None:
    value = _int(text, -1)
    return value if value >= 0 else None


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DlqEntry:
    """One record of the dead-letter topic, with its ``x-dlq-*`` and CloudEvents headers read."""

    id: str
    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    reason: str
    error_type: str
    error: str
    service: str
    origin_topic: str
    origin_partition: int
    origin_offset: int
    attempts: int
    at: datetime | None
    ce_id: str | None
    ce_type: str | None
    saga_id: str | None
    replay_count: int
    truncated: tuple[str, ...] = ()  # what the runtime cut to make the copy fit: payload, ...
    original_bytes: int | None = None
    original_value_bytes: int | None = None

    def header(self, name: str) -> str | None:
        for key, value in reversed(self.headers):
            if key == name:
                return _text(value)
        return None

    @property
    def origin(self) -> str:
        return f"{self.origin_topic}[{self.origin_partition}]@{self.origin_offset}"

    @property
    def is_truncated(self) -> bool:
        """A cut copy: the whole record is only at its origin
        (docs/architecture.md#oversized-dead-letters)."""
        return bool(self.truncated)

    @property
    def has_origin_offset(self) -> bool:
        return bool(self.origin_topic) and self.origin_partition >= 0 and self.origin_offset >= 0

    def read_original_command(self) -> str:
        """How an operator reads the original record (within its topic's retention)."""
        return (
            f"itinerant kcat -C -t {self.origin_topic} -p {self.origin_partition} "
            f"-o {self.origin_offset} -c 1"
        )

    @property
    def has_cloudevent(self) -> bool:
        """False for a header-less (or ce_id-less) raw request: it is replayed exactly as it was."""
        return bool(self.ce_id)

    @classmethod
    def from_record(cls, record: InRecord) -> DlqEntry:
        def text(name: str) -> str | None:
            return _text(record.header(name))

        origin_topic = text(dlq.ORIGIN_TOPIC) or ""
        origin_partition = _int(text(dlq.ORIGIN_PARTITION), -1)
        origin_offset = _int(text(dlq.ORIGIN_OFFSET), -1)
        at_text = text(dlq.AT)
        ce_id = text("ce_id") or None
        if not origin_topic:  # not written by our runtime: identify it by where it sits
            ident = entry_id(record.topic, record.partition, record.offset, ce_id, "dlq")
        elif origin_offset < 0:
            ident = entry_id(origin_topic, origin_partition, origin_offset, ce_id, at_text or "")
        else:
            ident = entry_id(origin_topic, origin_partition, origin_offset, ce_id)
        key_text = _text(record.key)
        return cls(
            id=ident,
            dlq_topic=record.topic,
            dlq_partition=record.partition,
            dlq_offset=record.offset,
            key=record.key,
            value=record.value or b"",
            headers=list(record.headers),
            reason=text(dlq.REASON) or "unknown",
            error_type=text(dlq.ERROR_TYPE) or "",
            error=text(dlq.ERROR) or "",
            service=text(dlq.SERVICE) or "",
            origin_topic=origin_topic,
            origin_partition=origin_partition,
            origin_offset=origin_offset,
            attempts=_int(text(dlq.ATTEMPTS), 1),
            at=_time(at_text),
            ce_id=ce_id,
            ce_type=text("ce_type"),
            saga_id=text("ce_sagaid") or key_text or None,
            replay_count=max(0, _int(text(REPLAY_COUNT), 0)),
            truncated=tuple(p for p in (text(dlq.TRUNCATED) or "").split(",") if p),
            original_bytes=_count(text(dlq.ORIGINAL_BYTES)),
            original_value_bytes=_count(text(dlq.ORIGINAL_VALUE_BYTES)),
        )


@dataclass(frozen=True, slots=True)
class Action:
    """What an operator did to an entry; the value of a record on the actions topic."""

    entry: str
    action: ActionKind
    at: datetime
    by: str
    why: str | None = None
    replay_count: int | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "entry": self.entry,
                "action": self.action,
                "at": self.at.isoformat(),
                "by": self.by,
                "why": self.why,
                "replay_count": self.replay_count,
            }
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes | None) -> Action | None:
        """The action in ``raw``, or None for anything that is not one (never raises)."""
        if not raw:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        kind = data.get("action")
        entry = data.get("entry")
        at = _time(data.get("at")) if isinstance(data.get("at"), str) else None
        if kind not in ("replayed", "discarded") or not isinstance(entry, str) or at is None:
            return None
        count = data.get("replay_count")
        why = data.get("why")
        return cls(
            entry=entry,
            action=kind,
            at=at,
            by=str(data.get("by") or "?"),
            why=why if isinstance(why, str) else None,
            replay_count=count if isinstance(count, int) else None,
        )

    def to_message(self, topic: str) -> OutMessage:
        return OutMessage(topic=topic, key=self.entry.encode(), value=self.to_json())
