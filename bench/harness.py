"""Runs one scenario end to end: fresh broker and topics, warm-up, idle CPU, saturation, fixed
offered loads, resource accounting, teardown."""

from __future__ import annotations

import math
import os
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.loadgen import (
    DEFAULT_CODEC,
    Codec,
    PhaseResult,
    Sink,
    make_producer,
    open_loop,
    saturation,
    warm_up,
)
from bench.procs import ProcGroup, rss_mb
from bench.scenario import ChainTopics, Scenario
from bench.tansu import TansuBroker


@dataclass
class BenchConfig:
    quick: bool = False
    partitions: int = 3
    fixed_loads: tuple[float, ...] = (100.0,)
    load_fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75)
    load_duration_s: float = 10.0
    saturation_target_s: float = 5.0  # size the saturation run to last about this long
    saturation_pilot: int = 500
    saturation_bounds: tuple[int, int] = (2000, 200_000)
    idle_s: float = 5.0
    curve_probes: int = 100
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_mode(cls, quick: bool) -> BenchConfig:
        if not quick:
            return cls()
        return cls(
            quick=True,
            load_fractions=(0.25, 0.5),
            load_duration_s=2.0,
            saturation_target_s=1.5,
            saturation_pilot=300,
            saturation_bounds=(1000, 40_000),
            idle_s=2.0,
            curve_probes=25,
        )


@dataclass
class PhaseContext:
    """What a scenario's ``after`` hook gets: the live harness objects of its run."""

    producer: Any
    sink: Sink
    topics: ChainTopics
    codec: Codec
    cfg: BenchConfig
    log: Callable[[str], None]


def _measured(procs: ProcGroup, phase: Callable[[], PhaseResult]) -> PhaseResult:
    before = procs.cpu()
    res = phase()
    after = procs.cpu()
    res.cpu_s = {k: round(after[k] - before[k], 3) for k in after}
    if res.received:
        res.cpu_s_per_1k = {k: round(v / res.received * 1000.0, 4) for k, v in res.cpu_s.items()}
    return res


def run_scenario(
    sc: Scenario, cfg: BenchConfig, workdir: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Run ``sc`` on its own fresh broker; return the results as a JSON-ready dict."""
    out: dict[str, Any] = {
        "name": sc.name,
        "title": sc.title,
        "slot": sc.slot,
        "unit": getattr(sc, "unit", "msg"),
    }
    configure = getattr(sc, "configure", None)
    if configure is not None:
        cfg = configure(cfg)
    codec: Codec = getattr(sc, "codec", None) or DEFAULT_CODEC
    t_begin = time.monotonic()
    broker = TansuBroker(log_path=workdir / f"tansu-{sc.name}.log")
    sink: Sink | None = None
    producer = None
    started = False
    try:
        broker.start()
        topics = sc.topics(f"bench.{sc.name}.{uuid.uuid4().hex[:6]}", cfg.partitions)
        broker.create_topics(topics.all, cfg.partitions)
        out["topics"] = {"names": list(topics.all), "partitions": topics.partitions}
        sink = Sink(broker.bootstrap, topics.exit, topics.partitions, codec).start()
        producer = make_producer(broker.bootstrap)
        procs = ProcGroup()
        procs.add("broker", "tansu", broker.pid)
        procs.add("loadgen", "bench", os.getpid(), tree=False)
        t0 = time.monotonic()
        sc.start(broker.bootstrap, topics, workdir)
        started = True
        for label, pid in sc.processes().items():
            procs.add("scenario", label, pid)
        out["ready_s"] = round(
            warm_up(producer, sink, topics.entry, sc.ready_timeout_s, codec=codec), 2
        )
        out["start_to_ready_s"] = round(time.monotonic() - t0, 2)
        log(f"  ready after {out['start_to_ready_s']} s")

        out["idle_cores"] = procs.idle_cpu(cfg.idle_s)
        out["idle_rss_mb"] = {
            f"scenario/{label}": round(rss_mb(pid), 1) for label, pid in sc.processes().items()
        }
        log(f"  idle cores {out['idle_cores']}")

        # Size the measured saturation run to last about saturation_target_s: grow a pilot
        # until it is long enough that pipeline latency no longer dominates the estimate.
        lo, hi = cfg.saturation_bounds
        n = cfg.saturation_pilot
        while True:
            pilot = saturation(producer, sink, topics.entry, n, codec=codec)
            if pilot.duration_s >= cfg.saturation_target_s / 2 or n >= hi:
                break
            n = int(min(hi, max(2 * n, pilot.throughput * cfg.saturation_target_s)))
        n = int(min(hi, max(lo, pilot.throughput * cfg.saturation_target_s)))
        sat = _measured(procs, lambda: saturation(producer, sink, topics.entry, n, codec=codec))
        out["saturation"] = sat.to_dict()
        log(
            f"  saturation {sat.throughput:.0f} msg/s over {sat.received}/{sat.sent} msgs, "
            f"p50 {sat.latency.p50} ms"
        )
        sc.processes()  # raises if a process died

        rates = sorted(
            {round(r, 1) for r in cfg.fixed_loads}
            | {round(f * sat.throughput, 1) for f in cfg.load_fractions if f * sat.throughput >= 1}
        )
        loads: list[dict[str, Any]] = []
        for rate in rates:
            frac = rate / sat.throughput if sat.throughput else math.nan
            res = _measured(
                procs,
                partial(
                    open_loop,
                    producer,
                    sink,
                    topics.entry,
                    rate,
                    cfg.load_duration_s,
                    codec=codec,
                ),
            )
            d = res.to_dict()
            d["fraction_of_saturation"] = round(frac, 3)
            loads.append(d)
            log(
                f"  load {rate:.0f} msg/s ({frac:.0%}): p50 {res.latency.p50} p95 "
                f"{res.latency.p95} p99 {res.latency.p99} ms, {res.received}/{res.sent}"
            )
        out["loads"] = loads
        sc.processes()
        out["peak_rss_mb"] = procs.peak_rss()
        out["cpu_s_per_1k_saturation"] = sat.cpu_s_per_1k
        after = getattr(sc, "after", None)
        if after is not None:
            out["extra"] = after(PhaseContext(producer, sink, topics, codec, cfg, log))
    except Exception as exc:  # one broken scenario must not lose the others' results
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
        log(f"  ERROR {out['error']} (logs in {workdir})")
    finally:
        if started:
            sc.stop()
        if sink is not None:
            sink.stop()
        if producer is not None:
            producer.flush(2)
        broker.stop()
    out["wall_s"] = round(time.monotonic() - t_begin, 1)
    return out
