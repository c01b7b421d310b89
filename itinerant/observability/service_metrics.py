"""What every service's ``/metrics`` says, scraped and derived once for ``itinerant top`` and the
operator console (docs/console.md#agents): per service up/down, throughput (rate of
``itinerant_messages_processed_total`` over the window since the previous scrape; without one,
the average since the service started), failures, retries, dead letters, consumer lag, the p99
processing time (from the histogram buckets like PromQL's ``histogram_quantile``) and the state
of each circuit breaker; the coordinator's sagas by state.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from itinerant.settings import Settings

PROCESSED = "itinerant_messages_processed_total"
PROCESSING_BUCKET = "itinerant_processing_seconds_bucket"
DLQ = "itinerant_dlq_messages_total"
RETRIES = "itinerant_retries_total"
SAGAS = "itinerant_sagas"
LAG = "itinerant_consumer_lag_messages"
START_TIME = "process_start_time_seconds"
CIRCUIT = "itinerant_circuit_breaker_state"
#: ``itinerant_circuit_breaker_state`` values (itinerant/observability/metrics.py).
CIRCUIT_STATES = {0: "closed", 1: "half_open", 2: "open"}
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
    #: dependency -> "closed" | "half_open" | "open"
    circuits: dict[str, str] = field(default_factory=dict)


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
        for sample in now.values(CIRCUIT, service=name):
            dependency = sample.labels.get("dependency", "?")
            row.circuits[dependency] = CIRCUIT_STATES.get(int(sample.value), str(sample.value))
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
