"""The operator's view of the dead-letter topic (DESIGN §7), without any Kafka I/O.

Entries are the records of the ``dlq`` topic; actions are what operators did to them (replayed,
discarded), kept as JSON records keyed by entry id on the ``dlq.actions`` topic so every operator
on every machine sees the same history. This module folds the two into view rows, filters them,
resolves entry-id prefixes, applies the refusal rules (never replay twice by accident) and builds
the messages a replay or a discard publishes. ``itinerant.cli.dlq`` does the I/O and rendering.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from itinerant.runtime import dlq
from itinerant.wire.envelope import REPLAY_COUNT, Envelope, Headers, InRecord, OutMessage
from itinerant.wire.ids import new_id

ACTIONS_TOPIC = "dlq.actions"
DISCARD_REQUESTED = "itinerant.saga.discard_requested.v1"
DLQ_HEADER_PREFIX = "x-dlq-"
ENTRY_ID_LENGTH = 12

_ENTRY_NAMESPACE = uuid.UUID("0b0c6d2e-3f57-4c3e-9a8e-7d1f2b6c9e40")
_DURATION = re.compile(r"^\s*(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

ActionKind = Literal["replayed", "discarded"]
Status = Literal["pending", "replayed", "discarded"]


class UnknownEntry(LookupError):
    """No entry id starts with the given prefix (exit code 2)."""


class AmbiguousEntry(LookupError):
    """More than one entry id starts with the given prefix (exit code 2)."""

    def __init__(self, message: str, candidates: Sequence[str]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


# --- entries --------------------------------------------------------------------------------


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

    def header(self, name: str) -> str | None:
        for key, value in reversed(self.headers):
            if key == name:
                return _text(value)
        return None

    @property
    def origin(self) -> str:
        return f"{self.origin_topic}[{self.origin_partition}]@{self.origin_offset}"

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
        )


# --- actions --------------------------------------------------------------------------------


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


# --- the view -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EntryView:
    """An entry with what happened to it."""

    entry: DlqEntry
    actions: tuple[Action, ...] = ()
    #: ids of entries dead-lettered later for the same message (same ce_id), oldest first
    later: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def replays(self) -> int:
        return sum(1 for a in self.actions if a.action == "replayed")

    @property
    def status(self) -> Status:
        if any(a.action == "discarded" for a in self.actions):
            return "discarded"
        return "replayed" if self.replays else "pending"

    @property
    def last_replay_count(self) -> int:
        """Highest ``x-replay-count`` any replay of this entry carried (0 if never replayed)."""
        counts = [a.replay_count or 0 for a in self.actions if a.action == "replayed"]
        return max(counts, default=0)

    def describe_status(self) -> str:
        if self.status == "discarded":
            text = "discarded"
            if self.replays:
                text += f" (after {self.replays} replay{'s' if self.replays > 1 else ''})"
        elif self.status == "replayed":
            text = f"replayed {self.replays}x"
        else:
            text = "pending"
        if self.later:
            text += f", failed again (latest: {self.later[-1]})"
        return text

    def age(self, now: datetime) -> timedelta | None:
        return None if self.entry.at is None else now - self.entry.at

    def as_dict(self, now: datetime | None = None) -> dict[str, Any]:
        """JSON-able summary, for ``--json`` (stable keys: scripts rely on them)."""
        now = now or datetime.now(UTC)
        entry = self.entry
        age = self.age(now)
        return {
            "id": entry.id,
            "status": self.status,
            "replays": self.replays,
            "status_text": self.describe_status(),
            "reason": entry.reason,
            "error_type": entry.error_type,
            "error": entry.error,
            "service": entry.service,
            "origin_topic": entry.origin_topic,
            "origin_partition": entry.origin_partition,
            "origin_offset": entry.origin_offset,
            "attempts": entry.attempts,
            "at": entry.at.isoformat() if entry.at else None,
            "age_s": round(age.total_seconds(), 3) if age is not None else None,
            "saga_id": entry.saga_id,
            "ce_id": entry.ce_id,
            "ce_type": entry.ce_type,
            "replay_count": entry.replay_count,
            "dlq_partition": entry.dlq_partition,
            "dlq_offset": entry.dlq_offset,
            "later": list(self.later),
            "actions": [
                {
                    "action": a.action,
                    "at": a.at.isoformat(),
                    "by": a.by,
                    "why": a.why,
                    "replay_count": a.replay_count,
                }
                for a in self.actions
            ],
        }


def _sort_key(entry: DlqEntry) -> tuple[datetime, int, int]:
    at = entry.at or datetime.min.replace(tzinfo=UTC)
    return (at, entry.dlq_partition, entry.dlq_offset)


def fold(entries: Iterable[DlqEntry], actions: Iterable[Action]) -> list[EntryView]:
    """View rows, oldest first: each entry with its actions (by time) and its later failures.

    A record that appears twice in the topic (a re-sent dead letter) has the same id: it is
    shown once.
    """
    unique: dict[str, DlqEntry] = {}
    for entry in sorted(entries, key=_sort_key):
        unique.setdefault(entry.id, entry)
    by_entry: dict[str, list[Action]] = {}
    for action in actions:
        by_entry.setdefault(action.entry, []).append(action)
    ordered = list(unique.values())
    by_message: dict[str, list[str]] = {}
    for entry in ordered:
        if entry.ce_id:
            by_message.setdefault(entry.ce_id, []).append(entry.id)
    views = []
    for entry in ordered:
        siblings = by_message.get(entry.ce_id or "", [])
        later = tuple(siblings[siblings.index(entry.id) + 1 :]) if entry.id in siblings else ()
        views.append(
            EntryView(
                entry=entry,
                actions=tuple(sorted(by_entry.get(entry.id, []), key=lambda a: a.at)),
                later=later,
            )
        )
    return views


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``10m``, ``2h``, ``1.5d``, ``30s``, ``1w`` ago, or an ISO time (UTC when naive)."""
    now = now or datetime.now(UTC)
    match = _DURATION.match(text)
    if match:
        seconds = float(match["amount"]) * _UNIT_SECONDS[match["unit"]]
        return now - timedelta(seconds=seconds)
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration like 10m, 2h, 3d nor an ISO time like "
            "2024-05-01T12:00"
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def filter_views(
    views: Iterable[EntryView],
    *,
    reason: str | None = None,
    service: str | None = None,
    saga: str | None = None,
    since: datetime | None = None,
    status: str | None = None,
) -> list[EntryView]:
    """Rows matching every given filter (``saga`` may be a prefix of the saga id)."""
    rows = []
    for view in views:
        entry = view.entry
        if reason is not None and entry.reason != reason:
            continue
        if service is not None and entry.service != service:
            continue
        if saga is not None and not (entry.saga_id or "").startswith(saga):
            continue
        if since is not None and (entry.at is None or entry.at < since):
            continue
        if status is not None and view.status != status:
            continue
        rows.append(view)
    return rows


def resolve(views: Iterable[EntryView], prefix: str) -> EntryView:
    """The one entry whose id starts with ``prefix`` (case-insensitive)."""
    wanted = prefix.strip().lower()
    if not wanted:
        raise UnknownEntry("an entry id (or a prefix of one) is required; `itinerant dlq list`")
    matches = [v for v in views if v.id.startswith(wanted)]
    if not matches:
        raise UnknownEntry(
            f"no dead-letter entry has an id starting with {prefix!r}; "
            "`itinerant dlq list` shows the ids"
        )
    if len(matches) > 1:
        ids = [v.id for v in matches]
        raise AmbiguousEntry(
            f"{len(matches)} entries start with {prefix!r} ({', '.join(ids[:10])}"
            f"{', ...' if len(ids) > 10 else ''}); give more characters of the id",
            ids,
        )
    return matches[0]


# --- refusal rules --------------------------------------------------------------------------


def replay_refusal(view: EntryView) -> str | None:
    """Why replaying ``view`` needs ``--force`` (None: it may be replayed)."""
    if view.status == "discarded":
        last = [a for a in view.actions if a.action == "discarded"][-1]
        return (
            f"entry {view.id} was discarded by {last.by} at {last.at:%Y-%m-%d %H:%M:%S}Z"
            f"{f' ({last.why})' if last.why else ''} and its saga compensated; "
            "add --force to replay it anyway"
        )
    if view.status == "replayed":
        last = [a for a in view.actions if a.action == "replayed"][-1]
        again = f"; it failed again as entry {view.later[-1]}" if view.later else ""
        return (
            f"entry {view.id} was already replayed {view.replays}x (last by {last.by} at "
            f"{last.at:%Y-%m-%d %H:%M:%S}Z){again}; add --force to replay it again"
        )
    return None


def discard_refusal(view: EntryView) -> str | None:
    """Why discarding ``view`` needs ``--force`` (None: it may be discarded)."""
    if view.status == "discarded":
        last = [a for a in view.actions if a.action == "discarded"][-1]
        return (
            f"entry {view.id} was already discarded by {last.by} at "
            f"{last.at:%Y-%m-%d %H:%M:%S}Z; add --force to record it and ask again"
        )
    return None


def select_for_replay(
    views: Iterable[EntryView], *, force: bool
) -> tuple[list[EntryView], list[tuple[EntryView, str]]]:
    """Bulk selection: (to replay, refused with why).

    Per message (ce_id) only the newest entry is replayed: older ones were failures of the
    same message that the newer one supersedes, so replaying both would send it twice.
    """
    chosen: list[EntryView] = []
    refused: list[tuple[EntryView, str]] = []
    selected = list(views)
    newest: dict[str, str] = {}
    for view in selected:
        if view.entry.ce_id:
            newest[view.entry.ce_id] = view.id  # views are oldest first
    for view in selected:
        ce_id = view.entry.ce_id
        if ce_id and newest[ce_id] != view.id:
            refused.append(
                (view, f"entry {view.id} is superseded by {newest[ce_id]} (same message)")
            )
            continue
        why = replay_refusal(view)
        if why is not None and not force:
            refused.append((view, why))
            continue
        chosen.append(view)
    return chosen, refused


# --- what a replay and a discard publish ----------------------------------------------------


def next_replay_count(view: EntryView) -> int:
    return max(view.entry.replay_count, view.last_replay_count) + 1


def replay_message(view: EntryView) -> OutMessage:
    """The original record for its origin topic: no ``x-dlq-*`` headers, replay count + 1.

    A record without a ``ce_id`` (a bare request someone published without headers) is put
    back exactly as it was, minus the ``x-dlq-*`` headers.
    """
    entry = view.entry
    if not entry.origin_topic:
        raise ValueError(f"entry {entry.id} has no x-dlq-origin-topic header: nowhere to replay")
    headers = [(k, v) for k, v in entry.headers if not k.lower().startswith(DLQ_HEADER_PREFIX)]
    if entry.has_cloudevent:
        headers = [(k, v) for k, v in headers if k != REPLAY_COUNT]
        headers.append((REPLAY_COUNT, str(next_replay_count(view)).encode()))
    return OutMessage(topic=entry.origin_topic, key=entry.key, value=entry.value, headers=headers)


def discard_event(
    view: EntryView,
    *,
    topic: str,
    why: str,
    by: str,
    now: datetime | None = None,
    source: str = "/clients/cli",
) -> OutMessage:
    """The control event asking the coordinator to stop (compensate) the entry's saga."""
    saga_id = view.entry.saga_id
    if not saga_id:
        raise ValueError(f"entry {view.id} names no saga (no ce_sagaid header, no key)")
    data = {"saga_id": saga_id, "why": why, "entry": view.id, "by": by}
    return Envelope(
        id=new_id(),
        type=DISCARD_REQUESTED,
        source=source,
        saga_id=saga_id,
        data=json.dumps(data).encode(),
        time=now or datetime.now(UTC),
        causation_id=view.entry.ce_id,
    ).to_message(topic)
