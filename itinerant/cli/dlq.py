"""``itinerant dlq``: find, understand and recover every dead-lettered message.

The typer commands (list, show, replay, discard) and their exit codes. The folding, filtering,
id matching and refusal rules live in :mod:`itinerant.operators.dlq_actions`, the Kafka and HTTP
I/O in :mod:`.dlq_io`, the tables in :mod:`.dlq_render`. Operator actions are records on the
``dlq.actions`` topic, so every operator sees what every other one did (see
docs/architecture.md#the-dead-letter-topic).
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from itinerant.cli.context import cli_settings
from itinerant.errors import ItinerantError
from itinerant.operators.dlq_records import Action
from itinerant.operators.dlq_recovery import (
    discard_event,
    discard_refusal,
    replay_action,
    replay_message,
    replay_refusal,
    select_for_replay,
    truncation_refusal,
)
from itinerant.operators.dlq_view import (
    AmbiguousEntry,
    EntryView,
    UnknownEntry,
    filter_views,
    parse_since,
    resolve,
)
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.wire.envelope import InRecord, OutMessage

from .dlq_io import Snapshot, actions_topic, fetch_saga, publish, read_original, read_snapshot
from .dlq_render import (
    entry_json,
    payload_text,
    show_discarded,
    show_dry_run,
    show_entry,
    show_list,
    show_next_step,
    show_replayed,
    show_saga,
)
from .terminal import safe

__all__ = ["EXIT_CODES", "Snapshot", "dlq_app", "payload_text", "publish", "read_snapshot"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3

EXIT_CODES = (
    "Exit codes: 0 ok; 1 broker or other failure; 2 bad usage, unknown id or ambiguous prefix; "
    "3 refused (already replayed or discarded: add --force)."
)

dlq_app = typer.Typer(
    help="The dead-letter topic: list, show, replay and discard failed messages. " + EXIT_CODES,
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)


def _settings() -> Settings:
    return cli_settings()


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): fall back to the uid
        return f"uid{os.getuid()}"


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {safe(message, multiline=True)}")
    raise typer.Exit(code)


def _snapshot_or_fail(settings: Settings) -> list[EntryView]:
    try:
        return read_snapshot(settings).views()
    except ItinerantError as exc:
        _fail(exc.describe())


def _originals(settings: Settings, views: Sequence[EntryView]) -> dict[str, InRecord]:
    """The original records of the truncated copies among ``views``, where still retained."""
    found: dict[str, InRecord] = {}
    for view in views:
        entry = view.entry
        if not entry.is_truncated or not entry.has_origin_offset:
            continue
        try:
            original = read_original(
                settings, entry.origin_topic, entry.origin_partition, entry.origin_offset
            )
        except ItinerantError as exc:
            _fail(exc.describe())
        if original is not None:
            found[view.id] = original
    return found


def _ensure_actions_topic(settings: Settings) -> None:
    from itinerant.brokers.topics import ensure_topics

    try:
        ensure_topics(settings, [actions_topic(settings)])
    except ItinerantError as exc:
        _fail(f"cannot create the actions topic {actions_topic(settings)}: {exc.describe()}")


# --- commands ---------------------------------------------------------------------------------


def _help(*paragraphs: str) -> str:
    return "\n\n".join(paragraphs)


ReasonOpt = Annotated[str | None, typer.Option("--reason", help="only this x-dlq-reason")]
ServiceOpt = Annotated[str | None, typer.Option("--service", help="only from this service")]
SagaOpt = Annotated[str | None, typer.Option("--saga", help="only this saga (id or prefix)")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="dead-lettered since: 10m, 2h, 3d or an ISO time")
]


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)


@dlq_app.command(
    "list",
    help=_help(
        "Every dead-lettered message and what happened to it (pending, replayed, discarded).",
        "Reads the whole dead-letter topic and the operators' actions; filters combine.",
        "Exit codes: 0 ok (also when nothing matches); 1 broker or other failure; 2 bad usage.",
    ),
)
def list_cmd(
    reason: ReasonOpt = None,
    service: ServiceOpt = None,
    saga: SagaOpt = None,
    since: SinceOpt = None,
    status: Annotated[
        str | None, typer.Option("--status", help="only pending, replayed or discarded")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON array for scripts")] = False,
) -> None:
    if status is not None and status not in ("pending", "replayed", "discarded"):
        _fail(f"--status must be pending, replayed or discarded, not {status!r}", EXIT_USAGE)
    cutoff = _since(since)
    settings = _settings()
    views = filter_views(
        _snapshot_or_fail(settings),
        reason=reason,
        service=service,
        saga=saga,
        since=cutoff,
        status=status,
    )
    now = datetime.now(UTC)
    if as_json:
        print(json.dumps([v.as_dict(now) for v in views], indent=2))
        return
    filtered = any((reason, service, saga, since, status))
    show_list(console, views, now, filtered=filtered, dlq_topic=settings.dlq_topic)


@dlq_app.command(
    "show",
    help=_help(
        "One entry: headers, payload, the error and its saga's timeline.",
        "The timeline comes from the coordinator's saga view; it is left out if that is down.",
        "Exit codes: 0 ok; 1 broker or other failure; 2 unknown id or ambiguous prefix.",
    ),
)
def show_cmd(
    entry: Annotated[str, typer.Argument(help="entry id, or any unique prefix of it")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
) -> None:
    settings = _settings()
    view = _resolve_or_fail(_snapshot_or_fail(settings), entry)
    now = datetime.now(UTC)
    if as_json:
        saga: dict[str, Any] | None = None
        why_not: str | None = "the entry names no saga"
        if view.entry.saga_id:
            saga, why_not = fetch_saga(settings, view.entry.saga_id)
        print(json.dumps(entry_json(view, now, saga, why_not), indent=2))
        return
    show_entry(console, view, now)
    if view.entry.saga_id:
        show_saga(console, *fetch_saga(settings, view.entry.saga_id))
    show_next_step(console, view)


def _resolve_or_fail(views: Sequence[EntryView], prefix: str) -> EntryView:
    try:
        return resolve(views, prefix)
    except (UnknownEntry, AmbiguousEntry) as exc:
        _fail(str(exc), EXIT_USAGE)


@dlq_app.command(
    "replay",
    help=_help(
        "Put dead letters back on their origin topic, to be processed again.",
        "Each goes back with its original key, value, headers and message id, without the "
        "x-dlq-* headers and with x-replay-count incremented (a bare record without a ce_id "
        "goes back exactly as it was). Every replay is recorded so other operators see it.",
        "Give one entry id (or a unique prefix), or select with --reason, --saga or --all: "
        "then only the newest entry of each message is replayed, and entries already "
        "replayed or discarded are skipped unless --force.",
        "Exit codes: 0 ok (also when nothing matches); 1 broker or other failure; 2 bad "
        "usage, unknown id or ambiguous prefix; 3 refused because already replayed or "
        "discarded (add --force; for a selection, only when every matching entry was "
        "refused).",
    ),
)
def replay_cmd(
    entry: Annotated[
        str | None, typer.Argument(help="entry id, or any unique prefix of it")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="every entry with this reason")
    ] = None,
    saga: Annotated[str | None, typer.Option("--saga", help="every entry of this saga")] = None,
    all_: Annotated[bool, typer.Option("--all", help="every entry")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would be replayed; change nothing")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="replay even if already replayed or discarded")
    ] = False,
) -> None:
    chosen_ways = sum([entry is not None, reason is not None, saga is not None, all_])
    if chosen_ways != 1:
        _fail(
            "say what to replay: one entry id, or exactly one of --reason R, --saga ID, --all",
            EXIT_USAGE,
        )
    settings = _settings()
    views = _snapshot_or_fail(settings)
    refused: list[tuple[EntryView, str]]
    if entry is not None:
        view = _resolve_or_fail(views, entry)
        why = replay_refusal(view)
        if why is not None and not force:
            _fail(f"refused: {why}", EXIT_REFUSED)
        chosen, refused = [view], []
    else:
        selected = filter_views(views, reason=reason, saga=saga)
        chosen, refused = select_for_replay(selected, force=force)
    originals = _originals(settings, chosen)
    whole = []
    for view in chosen:  # a cut copy goes back only as its original, read from its offset
        why = truncation_refusal(view, originals.get(view.id))
        if why is None:
            whole.append(view)
        elif entry is not None:
            _fail(f"refused: {why}", EXIT_REFUSED)
        else:
            refused.append((view, why))
    chosen = whole
    for view, why in refused:
        err.print(f"[yellow]skipped[/yellow] {view.id}: {safe(why)}")
    if not chosen:
        if refused:
            _fail(
                "refused: nothing to replay (see why above; --force replays entries already "
                "replayed or discarded, never a truncated copy)",
                EXIT_REFUSED,
            )
        console.print("nothing to replay: no dead letters match")
        return
    try:
        messages = [replay_message(view, originals.get(view.id)) for view in chosen]
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    if dry_run:
        show_dry_run(console, chosen, messages)
        return
    _ensure_actions_topic(settings)
    outcome = publish(settings, messages)
    now = datetime.now(UTC)
    by = _operator()
    sent: list[tuple[EntryView, OutMessage]] = []
    failures = []
    for view, message, error in zip(chosen, messages, outcome, strict=True):
        if error is None:
            sent.append((view, message))
        else:
            failures.append(f"{view.id}: {error}")
    records = [
        replay_action(view, message, now, by).to_message(actions_topic(settings))
        for view, message in sent
    ]
    unrecorded = [
        f"{sent[i][0].id}: {error}" for i, error in enumerate(publish(settings, records)) if error
    ]
    show_replayed(console, sent)
    if unrecorded:
        _fail(
            "replayed, but the replay could not be recorded on "
            f"{actions_topic(settings)} ({'; '.join(unrecorded)}): others will see these "
            "entries as pending; do not replay them again"
        )
    if failures:
        _fail(
            f"Kafka did not take {len(failures)} replay(s): {'; '.join(failures)}; nothing was "
            "recorded for them, run the command again when the broker is back"
        )


@dlq_app.command(
    "discard",
    help=_help(
        "Give up on a dead letter: record why and ask the coordinator to compensate its saga.",
        "Publishes itinerant.saga.discard_requested.v1 to the saga events topic and records "
        "the discard so other operators see it.",
        "Exit codes: 0 ok; 1 broker or other failure; 2 bad usage, unknown id or ambiguous "
        "prefix; 3 refused because already discarded (add --force).",
    ),
)
def discard_cmd(
    entry: Annotated[str, typer.Argument(help="entry id, or any unique prefix of it")],
    why: Annotated[str, typer.Option("--why", help="why it is given up (recorded, required)")],
    force: Annotated[
        bool, typer.Option("--force", help="record and ask again even if already discarded")
    ] = False,
) -> None:
    if not why.strip():
        _fail('--why must say why (e.g. --why "card declined, customer informed")', EXIT_USAGE)
    settings = _settings()
    view = _resolve_or_fail(_snapshot_or_fail(settings), entry)
    refusal = discard_refusal(view)
    if refusal is not None and not force:
        _fail(f"refused: {refusal}", EXIT_REFUSED)
    by = _operator()
    now = datetime.now(UTC)
    messages: list[OutMessage] = []
    if view.entry.saga_id:
        event = discard_event(
            view,
            topic=settings.events_topic,
            why=why,
            by=by,
            now=now,
            source=f"/clients/{settings.operator}",
        )
        try:  # the coordinator believes a discard signed by an operator (docs/security.md)
            messages.append(mesh_keys(settings).sign(event, settings.operator))
        except ItinerantError as exc:
            _fail(exc.describe())
    else:
        err.print(
            f"[yellow]warning:[/yellow] entry {view.id} names no saga; recording the discard only"
        )
    messages.append(
        Action(entry=view.id, action="discarded", at=now, by=by, why=why).to_message(
            actions_topic(settings)
        )
    )
    _ensure_actions_topic(settings)
    errors = [e for e in publish(settings, messages) if e is not None]
    if errors:
        _fail(
            f"Kafka did not take the discard ({'; '.join(errors)}); run the command again "
            "(with --force if it now says already discarded)"
        )
    show_discarded(console, view)
