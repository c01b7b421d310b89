"""``itinerant top``: a live terminal view of the running system, for users without Grafana.

It scrapes every service's ``/metrics`` endpoint (ports from ``ITINERANT_METRICS_PORT_BASE``) and
shows, per service, throughput (rate of ``itinerant_messages_processed_total`` over the refresh
window; the first frame shows the average since the service started), failures, retries, consumer
lag and the p99 processing time (estimated from the histogram buckets like PromQL's
``histogram_quantile``); then dead letters by reason, sagas by state and the slowest step.
``--once`` prints one frame and exits.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from itinerant.cli.context import cli_settings
from itinerant.settings import Settings

from .terminal import safe, visible

PROCESSED = "itinerant_messages_processed_total"
PROCESSING_BUCKET = "itinerant_processing_seconds_bucket"
DLQ = "itinerant_dlq_messages_total"
RETRIES = "itinerant_retries_total"
SAGAS = "itinerant_sagas"
LAG = "itinerant_consumer_lag_messages"
START_TIME = "process_start_time_seconds"
FAILED_OUTCOMES = frozenset({"dead_lettered", "saga_failed", "rejected"})


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Scrape:
    service: str
    url: str
    at: float
    samples: list[Sample] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def values(self, name: str, **match: str) -> list[Sample]:
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in match.items())
        ]

    def total(self, name: str, **match: str) -> float:
        return sum(s.value for s in self.values(name, **match))


def parse_metrics(text: str) -> list[Sample]:
    return [
        Sample(sample.name, dict(sample.labels), float(sample.value))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def scrape(service: str, port: int, timeout_s: float = 2.0) -> Scrape:
    url = f"http://127.0.0.1:{port}/metrics"
    at = time.time()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Scrape(service, url, at, error=str(reason))
    try:
        return Scrape(service, url, at, parse_metrics(text))
    except ValueError as exc:
        return Scrape(service, url, at, error=f"unreadable metrics: {exc}")


def scrape_all(settings: Settings) -> list[Scrape]:
    scrapes = []
    for service in settings.service_names():
        port = settings.metrics_port(service)
        if port is not None:
            scrapes.append(scrape(service, port))
    return scrapes


# -- quantiles ---------------------------------------------------------------------------------


def buckets_of(scrape: Scrape, service: str) -> dict[float, float]:
    """Cumulative bucket counts of ``itinerant_processing_seconds`` of ``service``, all topics."""
    buckets: dict[float, float] = {}
    for sample in scrape.values(PROCESSING_BUCKET, service=service):
        le = float(sample.labels.get("le", "+Inf"))
        buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """``histogram_quantile``: linear interpolation inside the bucket holding the q-th value.
    ``None`` without observations; the highest finite bound if it falls in the +Inf bucket."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def _delta(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: now[le] - before.get(le, 0.0) for le in now}


# -- one frame ---------------------------------------------------------------------------------


@dataclass
class ServiceRow:
    service: str
    up: bool
    error: str | None = None
    processed: float = 0.0
    rate: float | None = None
    rate_window: str = ""
    failed: float = 0.0
    retries: float = 0.0
    dlq: float = 0.0
    lag: float | None = None
    p99_s: float | None = None


@dataclass
class Frame:
    at: float
    rows: list[ServiceRow]
    dlq_by_reason: dict[tuple[str, str], float]
    sagas_by_state: dict[str, float]
    slowest: ServiceRow | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "services": [row.__dict__ for row in self.rows],
            "dlq_by_reason": [
                {"service": s, "reason": r, "messages": v}
                for (s, r), v in sorted(self.dlq_by_reason.items())
            ],
            "sagas_by_state": self.sagas_by_state,
            "slowest": None
            if self.slowest is None
            else {"service": self.slowest.service, "p99_s": self.slowest.p99_s},
        }


def frame(current: list[Scrape], previous: list[Scrape] | None = None) -> Frame:
    """Figures from ``current`` scrapes; rates and p99 over the window since ``previous``."""
    before = {s.service: s for s in previous or [] if s.ok}
    rows: list[ServiceRow] = []
    dlq_by_reason: dict[tuple[str, str], float] = {}
    sagas: dict[str, float] = {}
    for now in current:
        name = now.service
        if not now.ok:
            rows.append(ServiceRow(name, up=False, error=now.error))
            continue
        row = ServiceRow(name, up=True)
        row.processed = now.total(PROCESSED, service=name)
        row.failed = sum(
            s.value
            for s in now.values(PROCESSED, service=name)
            if s.labels.get("outcome") in FAILED_OUTCOMES
        )
        row.retries = now.total(RETRIES, service=name)
        for sample in now.values(DLQ, service=name):
            reason = sample.labels.get("reason", "?")
            dlq_by_reason[(name, reason)] = dlq_by_reason.get((name, reason), 0.0) + sample.value
            row.dlq += sample.value
        lags = now.values(LAG, service=name)
        row.lag = sum(s.value for s in lags) if lags else None
        buckets = buckets_of(now, name)
        old = before.get(name)
        if old is not None and now.at > old.at:
            row.rate = (row.processed - old.total(PROCESSED, service=name)) / (now.at - old.at)
            row.rate_window = f"last {now.at - old.at:.0f}s"
            window = _delta(buckets, buckets_of(old, name))
            row.p99_s = quantile(0.99, window)
            if row.p99_s is None:
                row.p99_s = quantile(0.99, buckets)
        else:
            started = now.total(START_TIME)
            if started > 0 and now.at > started:
                row.rate = row.processed / (now.at - started)
                row.rate_window = "avg since start"
            row.p99_s = quantile(0.99, buckets)
        if name == "coordinator":
            for sample in now.values(SAGAS):
                sagas[sample.labels.get("state", "?")] = sample.value
        rows.append(row)
    timed = [r for r in rows if r.p99_s is not None]
    slowest = max(timed, key=lambda r: r.p99_s or 0.0) if timed else None
    return Frame(time.time(), rows, dlq_by_reason, sagas, slowest)


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
