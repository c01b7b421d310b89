"""Scenario 3's worker process: one no-op agent run through Itinerant's full runtime.

Run as ``python -m bench.itinerant_agent BOOTSTRAP PREFIX DATA_DIR PARTITIONS METRICS_BASE NAME
AGENT,AGENT,... [BROKER]``; BROKER (``kafka``, the default, or ``tansu``) is the broker kind the
runtime tunes itself for (fetch wait, idempotent producer), as under `itinerant up`. The agent's
only handler returns its input model unchanged, so what is measured is the runtime: CloudEvents
decoding, inbox dedup (SQLite), slip and budget checks, pydantic validation and
re-serialisation, the progress event, tracing spans, metrics, and producing with
acknowledgements awaited before the offset moves.

``BENCH_PROFILE=<dir>`` runs the worker under cProfile and writes ``<dir>/<NAME>.prof`` when the
worker stops (SIGTERM). ``BENCH_TIMING=<dir>`` wraps the worker's stages (processing, delivery,
each ``send_all``, each SQLite transaction) with wall-clock timers and writes
``<dir>/<NAME>.timing.json`` at exit: where one message's serial time goes. Both are used by
``python -m bench.profile_noop``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from itinerant.runtime.agent import Agent, HandlerContext
from itinerant.runtime.agent_service import agent_worker
from itinerant.settings import Settings


class NoopPayload(BaseModel):
    """What travels: the run id and the intended send time (monotonic ns), plus padding."""

    model_config = ConfigDict(extra="forbid")

    bench_run: str
    bench_t: int
    pad: str = ""


async def passthrough(payload: NoopPayload, ctx: HandlerContext) -> NoopPayload:
    return payload


def noop_agent(name: str) -> Agent:
    agent = Agent(name, "Benchmark no-op: returns its input unchanged.")
    agent.handler("run")(passthrough)
    return agent


def settings_for(
    bootstrap: str,
    prefix: str,
    data_dir: Path,
    partitions: int,
    metrics_base: int,
    agents: list[str],
    broker: str = "kafka",
) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        broker=broker,
        topic_prefix=prefix,
        data_dir=data_dir,
        partitions=partitions,
        agents=agents,
        metrics_port_base=metrics_base,
        coordinator_http_port=0,
        log_level="INFO",
    )


class _Timings:
    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, key: str, seconds: float) -> None:
        self.total[key] = self.total.get(key, 0.0) + seconds
        self.count[key] = self.count.get(key, 0) + 1

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {
                    k: {"calls": self.count[k], "total_s": round(v, 4)}
                    for k, v in sorted(self.total.items())
                },
                indent=2,
            )
        )


def instrument(worker: Any, out: Path) -> None:
    """Wrap the worker's stages with timers (bench only; the runtime is not changed)."""
    t = _Timings()
    atexit.register(t.dump, out)

    def timed(key: str, func: Any) -> Any:
        @functools.wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await func(*args, **kwargs)
            finally:
                t.add(key, time.perf_counter() - t0)

        return wrapper

    worker.deliver = timed("deliver (send_all x2 + mark_sent)", worker.deliver)
    producer = worker.producer
    producer.send_all = timed("producer.send_all (produce + await ack)", producer.send_all)
    for sub in worker.subscriptions:
        sub.handle = timed("process (decode..handler..outbox commit)", sub.handle)
    store = worker.store
    transaction = store.transaction

    @contextlib.contextmanager
    def timed_transaction() -> Iterator[Any]:
        t0 = time.perf_counter()
        with transaction() as conn:
            yield conn
            t1 = time.perf_counter()
        t.add("sqlite transaction (BEGIN..COMMIT, incl. handler)", time.perf_counter() - t0)
        t.add("sqlite COMMIT", time.perf_counter() - t1)

    store.transaction = timed_transaction
    mark_sent = store.mark_sent

    def timed_mark_sent(seqs: Any) -> None:
        t0 = time.perf_counter()
        mark_sent(seqs)
        t.add("sqlite mark_sent (autocommit UPDATE)", time.perf_counter() - t0)

    store.mark_sent = timed_mark_sent


def main(argv: list[str]) -> int:
    bootstrap, prefix, data_dir, partitions, metrics_base, name, agents_csv = argv[:7]
    broker = argv[7] if len(argv) > 7 else "kafka"
    settings = settings_for(
        bootstrap,
        prefix,
        Path(data_dir),
        int(partitions),
        int(metrics_base),
        agents_csv.split(","),
        broker,
    )
    worker = agent_worker(noop_agent(name), settings)
    timing_dir = os.environ.get("BENCH_TIMING")
    if timing_dir:
        instrument(worker, Path(timing_dir) / f"{name}.timing.json")
    profile_dir = os.environ.get("BENCH_PROFILE")
    if not profile_dir:
        worker.run()
        return 0
    import cProfile

    prof = cProfile.Profile()
    prof.enable()
    try:
        worker.run()
    finally:
        prof.disable()
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        prof.dump_stats(str(Path(profile_dir) / f"{name}.prof"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
