"""Recovering dead letters: whether an entry may be replayed or discarded (the refusal rules:
never replay twice by accident), which entries a bulk replay takes, and the messages a replay
or a discard publishes (see docs/wire-contract.md#replay-headers).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from itinerant.wire.control import DISCARD_REQUESTED
from itinerant.wire.envelope import REPLAY_COUNT, Envelope, InRecord, OutMessage
from itinerant.wire.ids import new_id

from .dlq_records import Action
from .dlq_view import EntryView

DLQ_HEADER_PREFIX = "x-dlq-"


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


def truncation_refusal(view: EntryView, original: InRecord | None) -> str | None:
    """Why a cut copy cannot be replayed (None: it is whole, or its original was read back).

    A cut copy is never replayed itself: that would send the cut payload. Its original is read
    from the origin topic's offset instead, which works within that topic's retention and only
    if the record found there is the same message (same ``ce_id``)."""
    entry = view.entry
    if not entry.is_truncated:
        return None
    what = ", ".join(entry.truncated)
    if not entry.has_origin_offset:
        return (
            f"entry {view.id} is a truncated copy ({what} cut) of a message that was never "
            "stored on a topic: there is no original to replay; discard it "
            f'(`itinerant dlq discard {view.id} --why "..."`)'
        )
    where = entry.origin
    if original is None:
        return (
            f"entry {view.id} is a truncated copy ({what} cut) and its original at {where} is "
            "no longer there (past the topic's retention?); nothing whole is left to replay: "
            f'discard it (`itinerant dlq discard {view.id} --why "..."`)'
        )
    found = _text(original.header("ce_id"))
    if (found or None) != entry.ce_id:
        return (
            f"entry {view.id} is a truncated copy ({what} cut) and the record at {where} is "
            f"another message (ce_id {found!r}, not {entry.ce_id!r}): refusing to replay it"
        )
    return None


def _text(raw: bytes | None) -> str | None:
    return raw.decode("utf-8", errors="replace") if raw is not None else None


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


def replay_message(view: EntryView, original: InRecord | None = None) -> OutMessage:
    """The original record for its origin topic: no ``x-dlq-*`` headers, replay count + 1.

    A record without a ``ce_id`` (a bare request someone published without headers) is put
    back exactly as it was, minus the ``x-dlq-*`` headers. A truncated copy is replayed from
    ``original``, the record read back from its origin offset (see :func:`truncation_refusal`).
    """
    entry = view.entry
    if not entry.origin_topic:
        raise ValueError(f"entry {entry.id} has no x-dlq-origin-topic header: nowhere to replay")
    why = truncation_refusal(view, original)
    if why is not None:
        raise ValueError(why)
    key, value, stored = entry.key, entry.value, entry.headers
    if entry.is_truncated and original is not None:
        key, value, stored = original.key, original.value or b"", list(original.headers)
    headers = [(k, v) for k, v in stored if not k.lower().startswith(DLQ_HEADER_PREFIX)]
    if entry.has_cloudevent:
        headers = [(k, v) for k, v in headers if k != REPLAY_COUNT]
        headers.append((REPLAY_COUNT, str(next_replay_count(view)).encode()))
    return OutMessage(topic=entry.origin_topic, key=key, value=value, headers=headers)


def replay_action(view: EntryView, message: OutMessage, at: datetime, by: str) -> Action:
    """The record that ``view`` was replayed as ``message``."""
    count = dict(message.headers).get(REPLAY_COUNT)
    return Action(
        entry=view.id,
        action="replayed",
        at=at,
        by=by,
        replay_count=int(count) if count else None,
    )


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
