"""``itinerant top``: a live terminal view of the running system, for users without Grafana.

It scrapes every service's ``/metrics`` endpoint (ports from ``ITINERANT_METRICS_PORT_BASE``;
the scraping and the figures are ``itinerant/observability/service_metrics.py``, shared with the
operator console) and shows, per service, throughput, failures, retries, consumer lag, the p99
processing time; then dead letters by reason, sagas by state and the
slowest step.
``--once`` prints one frame and exits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from itinerant.cli.context import cli_settings
from itinerant.observability.service_metrics import (
    Frame,
    Scrape,
    ServiceRow,
    frame,
    parse_metrics,
    quantile,
    scrape_all,
)
from itinerant.settings import Settings

from .terminal import safe, visible

__all__ = ["Frame", "Scrape", "ServiceRow", "frame", "parse_metrics", "quantile", "top_command"]


# -- rendering ---------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:,.1f} ms" if seconds < 1 else f"{seconds:,.2f} s"


def render(view: Frame, settings: Settings) -> Group:
    windows = sorted({row.rate_window for row in view.rows if row.rate_window})
    title = "services" + (f" (msg/s: {', '.join(windows)})" if windows else "")
    services = Table(title=title, title_justify="left", expand=False)
    services.add_column("service", no_wrap=True, min_width=11)
    for column, justify in (
        ("up", "center"),
        ("msg/s", "right"),
        ("total", "right"),
        ("failed", "right"),
        ("dlq", "right"),
        ("retries", "right"),
        ("lag", "right"),
        ("p99", "right"),
    ):
        services.add_column(column, justify=justify)  # type: ignore[arg-type]
    down: list[str] = []
    for row in view.rows:
        if not row.up:
            services.add_row(safe(row.service), "[red]down[/red]", *([""] * 7))
            down.append(f"{row.service}: {row.error}")
            continue
        services.add_row(
            safe(row.service),
            "[green]up[/green]",
            _num(row.rate, 2),
            _num(row.processed),
            f"[red]{_num(row.failed)}[/red]" if row.failed else "0",
            f"[red]{_num(row.dlq)}[/red]" if row.dlq else "0",
            _num(row.retries),
            _num(row.lag),
            _duration(row.p99_s),
        )
    parts: list[Any] = [services]
    parts.extend(Text(f"  {visible(line)}", style="red") for line in down)
    sagas = Table(title="sagas by state", title_justify="left")
    sagas.add_column("state")
    sagas.add_column("sagas", justify="right")
    for state, count in sorted(view.sagas_by_state.items(), key=lambda kv: (-kv[1], kv[0])):
        if count:
            sagas.add_row(safe(state), _num(count))
    if not sagas.rows:
        sagas.add_row("[dim](none yet)[/dim]", "")
    parts.append(sagas)
    dlq = Table(title="dead letters by reason", title_justify="left")
    dlq.add_column("service")
    dlq.add_column("reason")
    dlq.add_column("messages", justify="right")
    for (service, reason), count in sorted(view.dlq_by_reason.items(), key=lambda kv: -kv[1]):
        if count:
            dlq.add_row(safe(service), safe(reason), _num(count))
    if not dlq.rows:
        dlq.add_row("[dim](none)[/dim]", "", "")
    parts.append(dlq)
    if view.slowest is not None:
        parts.append(
            Text.from_markup(
                f"slowest step: [bold]{safe(view.slowest.service)}[/bold] "
                f"p99 ≈ {_duration(view.slowest.p99_s)}"
            )
        )
    stamp = time.strftime("%H:%M:%S", time.localtime(view.at))
    parts.append(
        Text.from_markup(
            f"[dim]{stamp}  metrics from 127.0.0.1 ports "
            f"{settings.metrics_port_base}+; Ctrl-C to quit[/dim]"
        )
    )
    return Group(*parts)


def _all_down(scrapes: Iterable[Scrape]) -> bool:
    return all(not s.ok for s in scrapes)


def top_command(
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    interval: Annotated[float, typer.Option(help="seconds between refreshes")] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="one frame as JSON (implies --once)")] = (
        False
    ),
) -> None:
    """Live view of the running services: throughput, failures, DLQ, sagas, lag, slowest step."""
    settings = cli_settings()
    console = Console()
    if settings.metrics_port_base == 0:
        Console(stderr=True).print(
            "[bold red]error:[/bold red] metrics are off (ITINERANT_METRICS_PORT_BASE=0)"
        )
        raise typer.Exit(2)
    current = scrape_all(settings)
    if once or as_json:
        view = frame(current)
        if as_json:
            print(json.dumps(view.as_dict()))
        else:
            console.print(render(view, settings))
        if _all_down(current):
            Console(stderr=True).print(
                "[bold red]error:[/bold red] no service answered on its metrics port; "
                "is `itinerant up` running (with the same ITINERANT_* settings)?"
            )
            raise typer.Exit(1)
        return
    previous: list[Scrape] | None = None
    with Live(
        render(frame(current), settings), console=console, auto_refresh=False, screen=False
    ) as live:
        try:
            while True:
                time.sleep(max(interval, 0.2))
                previous, current = current, scrape_all(settings)
                live.update(render(frame(current, previous), settings), refresh=True)
        except KeyboardInterrupt:
            pass
