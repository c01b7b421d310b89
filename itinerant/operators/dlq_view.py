"""The operator's view rows: each dead letter with what operators did to it, filtered, and found
by a prefix of its id (see docs/architecture.md#the-dead-letter-topic).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .dlq_records import Action, DlqEntry

Status = Literal["pending", "replayed", "discarded"]

_DURATION = re.compile(r"^\s*(?P<amount>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class UnknownEntry(LookupError):
    """No entry id starts with the given prefix (exit code 2)."""


class AmbiguousEntry(LookupError):
    """More than one entry id starts with the given prefix (exit code 2)."""

    def __init__(self, message: str, candidates: Sequence[str]) -> None:
        super().__init__(message)
        self.candidates = list(candidates)


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
            "truncated": list(entry.truncated),
            "original_bytes": entry.original_bytes,
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
