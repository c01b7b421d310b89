"""The agents page and the charts (docs/console.md#agents): the services' metrics sampled every
``console_sample_s`` into a bounded ring (``console_history_s`` back), derived with
``itinerant/observability/service_metrics.py`` like ``itinerant top``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itinerant.observability.service_metrics import Frame, Scrape, frame

log = logging.getLogger(__name__)

#: The charts, after the main Grafana dashboard's panels (deploy/grafana).
CHARTS = (
    ("throughput", "Throughput (msg/s)"),
    ("p99", "p99 processing time (ms)"),
    ("lag", "Consumer lag (messages)"),
    ("dead_letters", "Dead letters (total)"),
    ("sagas", "Sagas by state"),
)


@dataclass(frozen=True)
class Point:
    """One sample: ``values[chart][series]`` at ``at`` (epoch seconds)."""

    at: float
    values: dict[str, dict[str, float]]


def point_of(view: Frame) -> Point:
    values: dict[str, dict[str, float]] = {name: {} for name, _ in CHARTS}
    for row in view.rows:
        if not row.up:
            continue
        if row.rate is not None:
            values["throughput"][row.service] = row.rate
        if row.p99_s is not None:
            values["p99"][row.service] = row.p99_s * 1000
        if row.lag is not None:
            values["lag"][row.service] = row.lag
        values["dead_letters"][row.service] = row.dlq
    values["sagas"] = {state: n for state, n in view.sagas_by_state.items()}
    return Point(view.at, values)


class Ring:
    """The last ``keep`` points, oldest dropped first."""

    def __init__(self, keep: int) -> None:
        self.points: deque[Point] = deque(maxlen=max(keep, 2))

    def add(self, point: Point) -> None:
        self.points.append(point)

    def series(self) -> list[dict[str, Any]]:
        """Per chart, every series as ``[[at, value], ...]`` (a gap where a sample lacks it)."""
        charts = []
        for name, title in CHARTS:
            names = sorted({s for p in self.points for s in p.values.get(name, {})})
            series = [
                {
                    "name": s,
                    "points": [
                        [round(p.at, 3), round(v, 4)]
                        for p in self.points
                        if (v := p.values.get(name, {}).get(s)) is not None and math.isfinite(v)
                    ],
                }
                for s in names
            ]
            charts.append({"name": name, "title": title, "series": series})
        return charts


class Sampler:
    """Scrapes every ``every_s`` in a thread; keeps the latest frame and the ring."""

    def __init__(self, scrape: Callable[[], list[Scrape]], every_s: float, keep_s: float) -> None:
        self.scrape = scrape
        self.every_s = every_s
        self.ring = Ring(int(keep_s / every_s) + 1)
        self.previous: list[Scrape] | None = None
        self.latest: Frame | None = None
        self.task: asyncio.Task[None] | None = None

    def sample(self) -> Frame:
        current = self.scrape()
        view = frame(current, self.previous)
        self.previous = current
        self.latest = view
        self.ring.add(point_of(view))
        return view

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(None, self.sample)
            except Exception:  # one failed sample must not end the charts
                log.exception("console metrics sample failed")
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
