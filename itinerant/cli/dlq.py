"""``itinerant dlq``: find, understand and recover every dead-lettered message (DESIGN §7).

Kafka I/O and rendering only; the folding, filtering, id matching and refusal rules live in
:mod:`itinerant.operators.dlq_actions`. Operator actions are records on the ``dlq.actions`` topic,
so every operator sees what every other one did.
"""

from __future__ import annotations

import getpass
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, NoReturn

import typer
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from itinerant.brokers.connection import quiet_client_config
from itinerant.cli.context import cli_settings
from itinerant.errors import BrokerUnavailable, ItinerantError
from itinerant.operators.dlq_actions import (
    ACTIONS_TOPIC,
    Action,
    AmbiguousEntry,
    DlqEntry,
    EntryView,
    UnknownEntry,
    discard_event,
    discard_refusal,
    filter_views,
    fold,
    parse_since,
    replay_message,
    replay_refusal,
    resolve,
    select_for_replay,
)
from itinerant.settings import Settings
from itinerant.wire.envelope import REPLAY_COUNT, InRecord, OutMessage
from itinerant.wire.ids import new_id

from .render import saga_tables

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


def actions_topic(settings: Settings) -> str:
    return settings.topic(ACTIONS_TOPIC)


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): fall back to the uid
        return f"uid{os.getuid()}"


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    err.print(f"[bold red]error:[/bold red] {escape(message)}")
    raise typer.Exit(code)


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    entries: list[DlqEntry]
    actions: list[Action]

    def views(self) -> list[EntryView]:
        return fold(self.entries, self.actions)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
            "group.id": f"itinerant-cli-dlq-{new_id()}",  # required by the client; never joined
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": settings.consumer_fetch_wait_ms,
            "allow.auto.create.topics": False,
        }
    )


def read_snapshot(settings: Settings, *, deadline_s: float | None = None) -> Snapshot:
    """Every record of the dlq and actions topics, read from the start until caught up.

    No consumer group: all partitions are assigned from the beginning. Caught up means every
    partition reached its high watermark and then a poll came back empty (the embedded broker's
    watermark can point inside the last batch). Raises :class:`BrokerUnavailable` if Kafka does
    not answer, or if the topics cannot be read to the end before the deadline.
    """
    deadline_s = deadline_s if deadline_s is not None else max(15.0, settings.broker_timeout_s * 4)
    dlq_topic, actions = settings.dlq_topic, actions_topic(settings)
    consumer = _consumer(settings)
    try:
        try:
            metadata = consumer.list_topics(timeout=settings.broker_timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {settings.kafka_bootstrap_servers} within "
                f"{settings.broker_timeout_s:g}s ({exc}); start it with `itinerant up` or point "
                "KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
            ) from exc
        if dlq_topic not in metadata.topics:
            raise BrokerUnavailable(
                f"topic {dlq_topic} does not exist at {settings.kafka_bootstrap_servers}; "
                "run `itinerant topics create` (or `itinerant up`)"
            )
        topics = [t for t in (dlq_topic, actions) if t in metadata.topics]
        remaining: dict[tuple[str, int], int] = {}  # partition -> high watermark to reach
        assignment = []
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=settings.broker_timeout_s
                )
                if high > max(low, 0):
                    remaining[(topic, partition)] = int(high)
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        entries: list[DlqEntry] = []
        acts: list[Action] = []
        if not remaining:
            return Snapshot(entries, acts)
        consumer.assign(assignment)
        deadline = time.monotonic() + deadline_s
        while True:
            message = consumer.poll(0.3 if not remaining else 0.5)
            if message is None:
                if not remaining:
                    return Snapshot(entries, acts)
            elif message.error() is None:
                where = (message.topic(), message.partition())
                if where in remaining and message.offset() + 1 >= remaining[where]:
                    del remaining[where]
                if message.topic() == dlq_topic:
                    entries.append(DlqEntry.from_record(_record(message)))
                else:
                    action = Action.from_json(message.value())
                    if action is not None:
                        acts.append(action)
            if time.monotonic() > deadline:
                behind = ", ".join(f"{t}[{p}]" for t, p in sorted(remaining)) or "the last poll"
                raise BrokerUnavailable(
                    f"could not read {dlq_topic} to its end within {deadline_s:.0f}s (still "
                    f"waiting on {behind}); is the broker overloaded? try again"
                )
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} failed while reading: {exc}"
        ) from exc
    finally:
        consumer.close()


def _record(message: Any) -> InRecord:
    return InRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        headers=list(message.headers() or []),
    )


def _snapshot_or_fail(settings: Settings) -> list[EntryView]:
    try:
        return read_snapshot(settings).views()
    except ItinerantError as exc:
        _fail(exc.describe())


# --- writing ----------------------------------------------------------------------------------


def publish(settings: Settings, messages: Sequence[OutMessage]) -> list[str | None]:
    """Produce ``messages`` in order; per message None if Kafka took it, else the error."""
    producer = Producer(
        {
            **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
            "message.timeout.ms": int(settings.broker_timeout_s * 2000),
            "enable.idempotence": False,
        }
    )
    outcome: list[str | None] = ["timed out"] * len(messages)

    def report(index: int) -> Any:
        def done(error: Any, _message: Any) -> None:
            outcome[index] = None if error is None else str(error)

        return done

    for index, message in enumerate(messages):
        producer.produce(
            message.topic,
            value=message.value,
            key=message.key,
            headers=message.headers,
            on_delivery=report(index),
        )
        producer.poll(0)
    producer.flush(settings.broker_timeout_s * 2)
    return outcome


def _ensure_actions_topic(settings: Settings) -> None:
    from itinerant.brokers.topics import ensure_topics

    try:
        ensure_topics(settings, [actions_topic(settings)])
    except ItinerantError as exc:
        _fail(f"cannot create the actions topic {actions_topic(settings)}: {exc.describe()}")


# --- rendering --------------------------------------------------------------------------------


def _age(delta: timedelta | None) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``."""
    if delta is None:
        return "?"
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _status(view: EntryView) -> str:
    style = {"pending": "red", "replayed": "yellow", "discarded": "dim"}[view.status]
    return f"[{style}]{escape(view.describe_status())}[/{style}]"


def list_table(views: Sequence[EntryView], now: datetime) -> Table:
    table = Table(title=f"dead letters ({len(views)})")
    for column in ("id", "age", "reason", "service", "origin", "tries", "saga", "status"):
        table.add_column(column, no_wrap=column in ("id", "origin"))
    for view in views:
        entry = view.entry
        table.add_row(
            entry.id,
            _age(view.age(now)),
            escape(entry.reason),
            escape(entry.service),
            escape(entry.origin),
            str(entry.attempts),
            escape(entry.saga_id or ""),
            _status(view),
        )
    return table


def payload_text(value: bytes) -> tuple[str, bool]:
    """(text, is_json): pretty JSON when it is JSON, else a safe repr and hex of the start."""
    if not value:
        return "(empty)", False
    try:
        return json.dumps(json.loads(value), indent=2, ensure_ascii=False), True
    except ValueError:
        pass
    head = value[:96]
    shown = repr(head) + (" ..." if len(value) > len(head) else "")
    return f"{len(value)} bytes, not JSON\n{shown}\nhex: {head.hex(' ')}", False


def fetch_saga(settings: Settings, saga_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The saga from the coordinator's HTTP view, or (None, why not)."""
    url = f"http://127.0.0.1:{settings.coordinator_http_port}/sagas/{saga_id}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read()), None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None, f"the coordinator does not know saga {saga_id}"
        return None, f"the coordinator answered {exc.code} at {url}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"the coordinator's saga view at {url} does not answer ({exc})"


def _show(settings: Settings, view: EntryView, now: datetime) -> None:
    entry = view.entry
    head = Table(title=f"dead letter {entry.id}", show_header=False)
    head.add_column(style="bold")
    head.add_column()
    rows = [
        ("status", _status(view)),
        ("reason", escape(entry.reason)),
        ("error type", escape(entry.error_type)),
        ("service", escape(entry.service)),
        ("origin", escape(entry.origin)),
        ("attempts", str(entry.attempts)),
        (
            "dead-lettered",
            f"{entry.at.isoformat() if entry.at else '?'} ({_age(view.age(now))} ago)",
        ),
        ("saga", escape(entry.saga_id or "")),
        ("message id", escape(entry.ce_id or "(none: a bare record, replayed as it was)")),
        ("type", escape(entry.ce_type or "")),
        ("replay count", str(entry.replay_count)),
        ("dlq position", f"{entry.dlq_topic}[{entry.dlq_partition}]@{entry.dlq_offset}"),
    ]
    for name, value in rows:
        head.add_row(name, value)
    console.print(head)
    console.print("[bold]error[/bold]")
    console.print(escape(entry.error or "(none)"))
    headers = Table(title="headers")
    headers.add_column("name", no_wrap=True)
    headers.add_column("value")
    for name, raw in entry.headers:
        text = raw.decode("utf-8", errors="replace")
        headers.add_row(escape(name), escape(text if len(text) <= 300 else text[:300] + " ..."))
    console.print(headers)
    key = entry.key.decode("utf-8", errors="replace") if entry.key is not None else "(none)"
    console.print(f"[bold]key[/bold] {escape(key)}")
    text, is_json = payload_text(entry.value)
    console.print(f"[bold]payload[/bold] ({len(entry.value)} bytes)")
    if len(text) > 4000:
        is_json, text = False, f"{text[:4000]}\n... ({len(text) - 4000} more characters)"
    if is_json:
        console.print_json(text)
    else:
        console.print(escape(text))
    if view.actions:
        history = Table(title="operator actions")
        for column in ("at", "action", "by", "why", "replay count"):
            history.add_column(column)
        for action in view.actions:
            history.add_row(
                action.at.isoformat(timespec="seconds"),
                action.action,
                escape(action.by),
                escape(action.why or ""),
                "" if action.replay_count is None else str(action.replay_count),
            )
        console.print(history)
    if view.later:
        console.print(f"failed again as: {', '.join(view.later)}")
    if entry.saga_id:
        saga, why_not = fetch_saga(settings, entry.saga_id)
        if saga is None:
            console.print(f"[yellow]saga timeline unavailable:[/yellow] {escape(why_not or '')}")
        else:
            for table in saga_tables(saga):
                console.print(table)
    hint = (
        f"`itinerant dlq replay {entry.id}` once the cause is fixed, or "
        f'`itinerant dlq discard {entry.id} --why "..."` to give up and compensate the saga'
    )
    if view.status == "pending":
        console.print(f"next: {hint}")


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
    if not views:
        console.print(
            "no dead letters match"
            if any((reason, service, saga, since, status))
            else f"no dead letters in {settings.dlq_topic}"
        )
        return
    console.print(list_table(views, now))
    pending = sum(1 for v in views if v.status == "pending")
    if pending:
        console.print(
            f"{pending} pending: `itinerant dlq show <id>` to see why, then `dlq replay` or "
            "`dlq discard`"
        )


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
        body = view.as_dict(now)
        body["headers"] = {k: v.decode("utf-8", errors="replace") for k, v in view.entry.headers}
        body["key"] = view.entry.key.decode("utf-8", errors="replace") if view.entry.key else None
        text, is_json = payload_text(view.entry.value)
        body["payload"] = json.loads(text) if is_json else text
        saga: dict[str, Any] | None = None
        why_not: str | None = "the entry names no saga"
        if view.entry.saga_id:
            saga, why_not = fetch_saga(settings, view.entry.saga_id)
        body["saga"] = saga
        body["saga_unavailable"] = why_not
        print(json.dumps(body, indent=2))
        return
    _show(settings, view, now)


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
    for view, why in refused:
        err.print(f"[yellow]skipped[/yellow] {view.id}: {escape(why)}")
    if not chosen:
        if refused:
            _fail("refused: nothing to replay (add --force to replay them anyway)", EXIT_REFUSED)
        console.print("nothing to replay: no dead letters match")
        return
    try:
        messages = [replay_message(view) for view in chosen]
    except ValueError as exc:
        _fail(str(exc), EXIT_USAGE)
    if dry_run:
        for view, message in zip(chosen, messages, strict=True):
            count = dict(message.headers).get(REPLAY_COUNT)
            console.print(
                f"would replay {view.id} ({escape(view.entry.reason)}) to {message.topic}"
                + (f" with {REPLAY_COUNT}={count.decode()}" if count else " as it was")
            )
        console.print(
            f"dry run: {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'}, nothing sent"
        )
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
    records = []
    for view, message in sent:
        count = dict(message.headers).get(REPLAY_COUNT)
        records.append(
            Action(
                entry=view.id,
                action="replayed",
                at=now,
                by=by,
                replay_count=int(count) if count else None,
            ).to_message(actions_topic(settings))
        )
    unrecorded = [
        f"{sent[i][0].id}: {error}" for i, error in enumerate(publish(settings, records)) if error
    ]
    for view, message in sent:
        console.print(
            f"[green]replayed[/green] {view.id} to {message.topic} "
            f"(saga {escape(view.entry.saga_id or '?')})"
        )
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
        messages.append(discard_event(view, topic=settings.events_topic, why=why, by=by, now=now))
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
    console.print(
        f"[green]discarded[/green] {view.id}"
        + (
            f"; asked the coordinator to compensate saga {escape(view.entry.saga_id)} "
            f"(`itinerant status {escape(view.entry.saga_id)}` to follow it)"
            if view.entry.saga_id
            else ""
        )
    )
