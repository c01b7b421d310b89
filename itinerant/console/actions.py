"""What an operator does from the console, as the logged-in principal: read, replay and discard
dead letters, approve or reject a held saga (docs/console.md#actions).

The same code paths as ``itinerant dlq`` and ``itinerant approvals``: the folding and refusal
rules of :mod:`itinerant.operators.dlq_actions`, the Kafka I/O of :mod:`itinerant.cli.dlq_io`,
decisions and discards signed with the principal's key (docs/security.md#approvals). These are
blocking Kafka calls: the web app runs them in a thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from itinerant.cli.approvals import signed_decision
from itinerant.cli.dlq_io import actions_topic, publish, read_original, read_snapshot
from itinerant.cli.dlq_render import entry_json
from itinerant.errors import ItinerantError
from itinerant.operators.dlq_records import Action
from itinerant.operators.dlq_recovery import (
    discard_event,
    discard_refusal,
    replay_action,
    replay_message,
    replay_refusal,
    truncation_refusal,
)
from itinerant.operators.dlq_view import AmbiguousEntry, EntryView, UnknownEntry, resolve
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.wire.envelope import OutMessage


class ActionRefused(Exception):
    """An action the console will not do, with the HTTP status and what to do instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _views(settings: Settings) -> list[EntryView]:
    try:
        return read_snapshot(settings).views()
    except ItinerantError as exc:
        raise ActionRefused(503, exc.describe()) from exc


def _one(settings: Settings, entry_id: str) -> EntryView:
    try:
        return resolve(_views(settings), entry_id)
    except (UnknownEntry, AmbiguousEntry) as exc:
        raise ActionRefused(404, str(exc)) from exc


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every dead letter, newest first, with what operators did to it."""
    now = datetime.now(UTC)
    return [view.as_dict(now) for view in reversed(_views(settings))]


def dead_letter(settings: Settings, entry_id: str) -> dict[str, Any]:
    """One dead letter: summary, headers, key and payload (the saga is fetched by the page)."""
    return entry_json(_one(settings, entry_id), datetime.now(UTC), None, None)


def _publish_or_refuse(settings: Settings, messages: list[OutMessage], what: str) -> None:
    from itinerant.brokers.topics import ensure_topics

    try:
        ensure_topics(settings, [actions_topic(settings)])
    except ItinerantError as exc:
        raise ActionRefused(503, exc.describe()) from exc
    errors = [e for e in publish(settings, messages) if e is not None]
    if errors:
        raise ActionRefused(503, f"Kafka did not take the {what} ({'; '.join(errors)}); try again")


def replay(settings: Settings, entry_id: str, by: str, force: bool = False) -> str:
    """Put one dead letter back on its origin topic and record the replay."""
    view = _one(settings, entry_id)
    why = replay_refusal(view)
    if why is not None and not force:
        raise ActionRefused(409, f"refused: {why.replace('add --force', 'tick force')}")
    original = None
    entry = view.entry
    if entry.is_truncated and entry.has_origin_offset:
        try:
            original = read_original(
                settings, entry.origin_topic, entry.origin_partition, entry.origin_offset
            )
        except ItinerantError as exc:
            raise ActionRefused(503, exc.describe()) from exc
    cut = truncation_refusal(view, original)
    if cut is not None:
        raise ActionRefused(409, f"refused: {cut}")
    try:
        message = replay_message(view, original)
    except ValueError as exc:
        raise ActionRefused(409, str(exc)) from exc
    _publish_or_refuse(settings, [message], "replay")
    record = replay_action(view, message, datetime.now(UTC), by)
    _publish_or_refuse(settings, [record.to_message(actions_topic(settings))], "replay record")
    return f"replayed {view.id} to {message.topic}"


def discard(settings: Settings, entry_id: str, why: str, by: str, force: bool = False) -> str:
    """Give up on a dead letter: the signed discard request for its saga, and the record."""
    if not why.strip():
        raise ActionRefused(400, "say why it is given up (recorded on the entry and the saga)")
    view = _one(settings, entry_id)
    refusal = discard_refusal(view)
    if refusal is not None and not force:
        raise ActionRefused(409, f"refused: {refusal.replace('add --force', 'tick force')}")
    now = datetime.now(UTC)
    messages: list[OutMessage] = []
    if view.entry.saga_id:
        event = discard_event(
            view, topic=settings.events_topic, why=why, by=by, now=now, source=f"/clients/{by}"
        )
        messages.append(_signed(settings, event, by))
    messages.append(
        Action(entry=view.id, action="discarded", at=now, by=by, why=why).to_message(
            actions_topic(settings)
        )
    )
    _publish_or_refuse(settings, messages, "discard")
    return f"discarded {view.id}" + ("" if view.entry.saga_id else " (it names no saga)")


def decide(
    settings: Settings, saga_id: str, decision: Literal["approve", "reject"], why: str, by: str
) -> str:
    """Publish an approval decision signed as ``by`` (who decided, on the saga's timeline)."""
    if not why.strip():
        raise ActionRefused(400, "say why (recorded on the saga's timeline)")
    if by not in settings.approvers:
        raise ActionRefused(
            403,
            f"principal {by!r} is not an approver (ITINERANT_APPROVERS); the coordinator would "
            "ignore its decision",
        )
    try:
        signed = signed_decision(settings, saga_id, decision, why, by)
    except ItinerantError as exc:
        raise ActionRefused(403, f"cannot sign as {by!r}: {exc.describe()}") from exc
    errors = [e for e in publish(settings, [signed]) if e is not None]
    if errors:
        raise ActionRefused(503, f"Kafka did not take the decision ({'; '.join(errors)})")
    return f"{'approved' if decision == 'approve' else 'rejected'} {saga_id} as {by}"


def _signed(settings: Settings, message: OutMessage, principal: str) -> OutMessage:
    try:
        return mesh_keys(settings).sign(message, principal)
    except ItinerantError as exc:
        raise ActionRefused(403, f"cannot sign as {principal!r}: {exc.describe()}") from exc
