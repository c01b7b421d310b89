"""Rich rendering of sagas and results for the terminal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.table import Table

from .terminal import safe

STATE_STYLE = {
    "completed": "green",
    "compensated": "yellow",
    "rejected": "magenta",
    "failed": "bold red",
    "parked": "red",
    "awaiting_approval": "bold magenta",
    "running": "cyan",
    "compensating": "yellow",
}


def styled(state: str) -> str:
    style = STATE_STYLE.get(state, "white")
    return f"[{style}]{safe(state)}[/{style}]"


def saga_tables(saga: dict[str, Any]) -> list[Table]:
    saga_id = safe(saga["saga_id"])
    head = Table(title=f"saga {saga_id}", show_header=False)
    head.add_row("state", styled(saga["state"]))
    if saga.get("reason"):
        head.add_row("reason", safe(saga["reason"]))
    if saga.get("error"):
        head.add_row("error", safe(saga["error"], multiline=True))
    head.add_row("created", safe(saga["created_at"]))
    head.add_row("deadline", safe(saga["deadline"]))
    if saga["state"] == "parked":
        head.add_row(
            "to resume",
            "fix the cause, then `itinerant dlq replay --saga "
            f"{saga_id}` (or `itinerant dlq discard` to compensate)",
        )
    if saga["state"] == "awaiting_approval":
        head.add_row(
            "to resume",
            f"`itinerant approvals approve {saga_id} --why ...` (or reject)",
        )
    steps = Table(title="steps")
    for column in ("#", "agent", "action", "status", "ms", "at", "reason"):
        steps.add_column(column)
    for step in saga.get("steps", []):
        steps.add_row(
            safe(step["index"]),
            safe(step["agent"]),
            safe(step["action"]),
            styled(step["status"]),
            f"{step['duration_ms']:.1f}",
            safe(str(step["at"])[11:23]),
            safe(step.get("reason") or ""),
        )
    timeline = Table(title="timeline")
    for column in ("at", "event", "detail"):
        timeline.add_column(column)
    for entry in saga.get("timeline", []):
        timeline.add_row(
            safe(str(entry["at"])[11:23]), safe(entry["event"]), safe(entry.get("detail", ""))
        )
    return [head, steps, timeline]


def results_table(
    rows: list[tuple[str, str, dict[str, Any] | None]],
    summarize: Callable[[dict[str, Any] | None], str | None] = lambda _output: None,
) -> Table:
    table = Table(title="results")
    for column in ("request", "saga", "status", "reason / summary", "ms"):
        table.add_column(column)
    for label, saga_id, result in rows:
        if result is None:
            table.add_row(safe(label), safe(saga_id[:12]), "[dim]waiting[/dim]", "", "")
            continue
        if result["status"] == "completed":
            detail = summarize(result.get("output")) or "completed"
        else:
            detail = f"{result.get('reason')}: {result.get('error')}"
        table.add_row(
            safe(label),
            safe(saga_id[:12]),
            styled(result["status"]),
            safe(detail[:90]),
            f"{result.get('duration_ms', 0):.0f}",
        )
    return table
