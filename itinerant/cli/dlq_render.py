"""How ``itinerant dlq`` shows dead letters: the list table, one entry in full (headers,
payload, error, operator actions) and its saga's timeline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.table import Table

from itinerant.operators.dlq_view import EntryView
from itinerant.wire.envelope import REPLAY_COUNT, OutMessage

from .render import saga_tables
from .terminal import bytes_text, safe, visible


def age_text(delta: timedelta | None) -> str:
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
    return f"[{style}]{safe(view.describe_status())}[/{style}]"


def list_table(views: Sequence[EntryView], now: datetime) -> Table:
    table = Table(title=f"dead letters ({len(views)})")
    for column in ("id", "age", "reason", "service", "origin", "tries", "saga", "status"):
        table.add_column(column, no_wrap=column in ("id", "origin"))
    for view in views:
        entry = view.entry
        table.add_row(
            entry.id,
            age_text(view.age(now)),
            safe(entry.reason),
            safe(entry.service),
            safe(entry.origin),
            str(entry.attempts),
            safe(entry.saga_id or ""),
            _status(view),
        )
    return table


def show_list(
    console: Console, views: Sequence[EntryView], now: datetime, *, filtered: bool, dlq_topic: str
) -> None:
    """The list table and a hint for pending entries, or why there is nothing to list."""
    if not views:
        console.print("no dead letters match" if filtered else f"no dead letters in {dlq_topic}")
        return
    console.print(list_table(views, now))
    pending = sum(1 for v in views if v.status == "pending")
    if pending:
        console.print(
            f"{pending} pending: `itinerant dlq show <id>` to see why, then `dlq replay` or "
            "`dlq discard`"
        )


def payload_text(value: bytes) -> tuple[str, bool]:
    """(text, is_json): pretty JSON when it is JSON, else a safe repr and hex of the start."""
    if not value:
        return "(empty)", False
    try:
        dumped = json.dumps(json.loads(value), indent=2, ensure_ascii=False)
        return visible(dumped, multiline=True, json_style=True), True
    except ValueError:
        pass
    head = value[:96]
    shown = repr(head) + (" ..." if len(value) > len(head) else "")
    return f"{len(value)} bytes, not JSON\n{shown}\nhex: {head.hex(' ')}", False


def entry_json(
    view: EntryView, now: datetime, saga: dict[str, Any] | None, why_not: str | None
) -> dict[str, Any]:
    """One entry for ``show --json``: the summary, headers, key, payload and its saga."""
    body = view.as_dict(now)
    body["headers"] = {k: v.decode("utf-8", errors="replace") for k, v in view.entry.headers}
    body["key"] = view.entry.key.decode("utf-8", errors="replace") if view.entry.key else None
    body["read_original"] = (
        view.entry.read_original_command() if view.entry.has_origin_offset else None
    )
    text, is_json = payload_text(view.entry.value)
    body["payload"] = json.loads(text) if is_json else text
    body["saga"] = saga
    body["saga_unavailable"] = why_not
    return body


def show_entry(console: Console, view: EntryView, now: datetime) -> None:
    """One entry in full: where it came from, why, its headers, payload and operator actions."""
    entry = view.entry
    head = Table(title=f"dead letter {entry.id}", show_header=False)
    head.add_column(style="bold")
    head.add_column()
    rows = [
        ("status", _status(view)),
        ("reason", safe(entry.reason)),
        ("error type", safe(entry.error_type)),
        ("service", safe(entry.service)),
        ("origin", safe(entry.origin)),
        ("attempts", str(entry.attempts)),
        (
            "dead-lettered",
            f"{entry.at.isoformat() if entry.at else '?'} ({age_text(view.age(now))} ago)",
        ),
        ("saga", safe(entry.saga_id or "")),
        ("message id", safe(entry.ce_id or "(none: a bare record, replayed as it was)")),
        ("type", safe(entry.ce_type or "")),
        ("replay count", str(entry.replay_count)),
        ("dlq position", f"{entry.dlq_topic}[{entry.dlq_partition}]@{entry.dlq_offset}"),
    ]
    for name, value in rows:
        head.add_row(name, value)
    console.print(head)
    if entry.is_truncated:
        show_truncation(console, view)
    console.print("[bold]error[/bold]")
    console.print(safe(entry.error or "(none)", multiline=True))
    headers = Table(title="headers")
    headers.add_column("name", no_wrap=True)
    headers.add_column("value")
    for name, raw in entry.headers:
        text = bytes_text(raw)
        headers.add_row(safe(name), safe(text if len(text) <= 300 else text[:300] + " ..."))
    console.print(headers)
    key = bytes_text(entry.key) if entry.key is not None else "(none)"
    console.print(f"[bold]key[/bold] {safe(key)}")
    text, is_json = payload_text(entry.value)
    cut = ", cut" if "payload" in entry.truncated else ""
    console.print(f"[bold]payload[/bold] ({len(entry.value)} bytes{cut})")
    if len(text) > 4000:
        is_json, text = False, f"{text[:4000]}\n... ({len(text) - 4000} more characters)"
    if is_json:
        highlighted = JSONHighlighter()(text)
        highlighted.no_wrap = True
        console.print(highlighted)
    else:
        console.print(safe(text, multiline=True))
    if view.actions:
        history = Table(title="operator actions")
        for column in ("at", "action", "by", "why", "replay count"):
            history.add_column(column)
        for action in view.actions:
            history.add_row(
                action.at.isoformat(timespec="seconds"),
                action.action,
                safe(action.by),
                safe(action.why or ""),
                "" if action.replay_count is None else str(action.replay_count),
            )
        console.print(history)
    if view.later:
        console.print(f"failed again as: {', '.join(view.later)}")


def show_truncation(console: Console, view: EntryView) -> None:
    """Say plainly that ``view`` is a cut copy, and where the whole record is."""
    entry = view.entry
    size = f" of {entry.original_bytes} bytes" if entry.original_bytes is not None else ""
    console.print(
        f"[bold yellow]truncated copy[/bold yellow]: the runtime cut "
        f"{safe(', '.join(entry.truncated))} so that the dead letter fits Kafka's limit."
    )
    if entry.has_origin_offset:
        console.print(
            f"the original record{size} is at {safe(entry.origin)}, readable within that "
            f"topic's retention: `{safe(entry.read_original_command())}`; "
            f"`itinerant dlq replay {entry.id}` replays it from there"
        )
    else:
        console.print(
            f"the original{size} was never stored on a topic (Kafka refused it as an output), "
            "so nothing whole is left: fix its cause, then discard this entry"
        )


def show_saga(console: Console, saga: dict[str, Any] | None, why_not: str | None) -> None:
    """The entry's saga from the coordinator's view, or why it is not shown."""
    if saga is None:
        console.print(f"[yellow]saga timeline unavailable:[/yellow] {safe(why_not or '')}")
    else:
        for table in saga_tables(saga):
            console.print(table)


def show_next_step(console: Console, view: EntryView) -> None:
    """What to do about a pending entry."""
    entry = view.entry
    hint = (
        f"`itinerant dlq replay {entry.id}` once the cause is fixed, or "
        f'`itinerant dlq discard {entry.id} --why "..."` to give up and compensate the saga'
    )
    if view.status == "pending":
        console.print(f"next: {hint}")


def show_dry_run(
    console: Console, chosen: Sequence[EntryView], messages: Sequence[OutMessage]
) -> None:
    """What ``replay --dry-run`` would send, and where."""
    for view, message in zip(chosen, messages, strict=True):
        count = dict(message.headers).get(REPLAY_COUNT)
        console.print(
            f"would replay {view.id} ({safe(view.entry.reason)}) to {safe(message.topic)}"
            + (f" with {REPLAY_COUNT}={count.decode()}" if count else " as it was")
        )
    console.print(f"dry run: {len(chosen)} entr{'y' if len(chosen) == 1 else 'ies'}, nothing sent")


def show_replayed(console: Console, sent: Sequence[tuple[EntryView, OutMessage]]) -> None:
    for view, message in sent:
        console.print(
            f"[green]replayed[/green] {view.id} to {safe(message.topic)} "
            f"(saga {safe(view.entry.saga_id or '?')})"
        )


def show_discarded(console: Console, view: EntryView) -> None:
    console.print(
        f"[green]discarded[/green] {view.id}"
        + (
            f"; asked the coordinator to compensate saga {safe(view.entry.saga_id)} "
            f"(`itinerant status {safe(view.entry.saga_id)}` to follow it)"
            if view.entry.saga_id
            else ""
        )
    )
