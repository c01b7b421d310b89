"""Runs one scenario end to end: a fresh broker (Apache Kafka or Tansu) and topics, warm-up, the
idle system, a burst ("saturation"), the search for the sustained rate (``bench.sustained``), fixed
offered loads, the idle system again, resource accounting, teardown."""

from __future__ import annotations

import dataclasses
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

from bench.brokers import fetch_wait_ms, make_broker
from bench.loadgen import (
    DEFAULT_CODEC,
    Codec,
    PhaseResult,
    Sink,
    make_producer,
    open_loop,
    saturation,
    settle,
    warm_up,
)
from bench.procs import ProcGroup, rss_mb
from bench.scenario import ChainTopics, Scenario
from bench.sustained import Criteria, SearchPlan, seed_from
from bench.sustained import search as sustained_search


@dataclass
class BenchConfig:
    quick: bool = False
    partitions: int = 3
    fixed_loads: tuple[float, ...] = (100.0,)
    load_fractions: tuple[float, ...] = (0.25, 0.5)
    load_duration_s: float = 10.0
    saturation_target_s: float = 5.0  # size the saturation run to last about this long
    saturation_pilot: int = 500
    saturation_bounds: tuple[int, int] = (2000, 200_000)
    idle_s: float = 5.0
    broker_warm_s: float = 3.0  # produce/consume on a scratch topic first (JIT: bench.brokers)
    curve_probes: int = 100
    # The sustained-throughput search (bench.sustained): 20 s probes in the full run.
    sustain: Criteria = field(default_factory=Criteria)
    search: SearchPlan = field(default_factory=SearchPlan)
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
            broker_warm_s=2.0,
            curve_probes=25,
            # Too short to be the method's figure (20 s): a development check only.
            sustain=Criteria(duration_s=4.0),
            search=SearchPlan(max_probes=4, precision=0.25),
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
    before, apart = procs.cpu(), procs.cpu_by_process("scenario")
    res = phase()
    after, apart_after = procs.cpu(), procs.cpu_by_process("scenario")
    res.cpu_s = {k: round(after[k] - before[k], 3) for k in after}
    res.cpu_s_by_process = {k: round(v - apart[k], 3) for k, v in apart_after.items() if k in apart}
    if res.received:
        res.cpu_s_per_1k = {k: round(v / res.received * 1000.0, 4) for k, v in res.cpu_s.items()}
    return res


def idle_system(procs: ProcGroup, sc: Scenario, broker_pid: int, seconds: float) -> dict[str, Any]:
    """The whole system at rest: cores used per role over ``seconds`` with nothing sent, and the
    resident memory of every scenario process and of the broker. "System" is the scenario's
    processes (every service) plus the broker; the load generator is listed apart."""
    cores = procs.idle_cpu(seconds)
    services = {label: round(rss_mb(pid), 1) for label, pid in sc.processes().items()}
    broker_rss = round(rss_mb(broker_pid), 1)
    return {
        "seconds": seconds,
        "cores": cores,
        "cores_system": round(cores.get("scenario", 0.0) + cores.get("broker", 0.0), 4),
        "rss_mb": services,
        "rss_mb_services": round(sum(services.values()), 1),
        "rss_mb_broker": broker_rss,
        "rss_mb_system": round(sum(services.values()) + broker_rss, 1),
    }


def run_scenario(
    sc: Scenario,
    cfg: BenchConfig,
    workdir: Path,
    log: Callable[[str], None],
    broker_kind: str = "kafka",
    previous_sustained: float | None = None,
) -> dict[str, Any]:
    """Run ``sc`` on its own fresh broker of ``broker_kind`` ("kafka" or "tansu"); return the
    results as a JSON-ready dict. ``previous_sustained``: this scenario's sustained rate in an
    earlier repeat, where the search starts (with a finer step)."""
    out: dict[str, Any] = {
        "name": sc.name,
        "title": sc.title,
        "slot": sc.slot,
        "unit": getattr(sc, "unit", "msg"),
        "broker": broker_kind,
    }
    # Optional: whether the scenario's services sign (``required``/``off``), which on/off pair
    # it belongs to, how many hops one unit makes, and the rate both halves of a pair run at.
    for attr in ("signing", "pair", "hops", "compare_rate"):
        if getattr(sc, attr, None) is not None:
            out[attr] = getattr(sc, attr)
    if hasattr(sc, "broker"):
        sc.broker = broker_kind
    configure = getattr(sc, "configure", None)
    if configure is not None:
        cfg = configure(cfg)
    codec: Codec = getattr(sc, "codec", None) or DEFAULT_CODEC
    t_begin = time.monotonic()
    broker = make_broker(broker_kind, log_path=workdir / f"{broker_kind}-{sc.name}.log")
    sink: Sink | None = None
    producer = None
    started = False
    try:
        broker.start()
        out["broker_start_s"] = broker.start_s
        out["broker_warm_msgs"] = broker.warm(cfg.broker_warm_s)
        log(
            f"  {broker_kind} broker ready after {broker.start_s} s (pid {broker.pid}); warmed "
            f"with {out['broker_warm_msgs']} messages in {cfg.broker_warm_s} s"
        )
        topics = sc.topics(f"bench.{sc.name}.{uuid.uuid4().hex[:6]}", cfg.partitions)
        broker.create_topics(topics.all, cfg.partitions)
        out["topics"] = {"names": list(topics.all), "partitions": topics.partitions}
        sink = Sink(
            broker.bootstrap, topics.exit, topics.partitions, codec, fetch_wait_ms(broker_kind)
        ).start()
        producer = make_producer(broker.bootstrap)
        procs = ProcGroup()
        procs.add("broker", broker_kind, broker.pid)
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

        idle = idle_system(procs, sc, broker.pid, cfg.idle_s)
        out["idle"] = idle
        out["idle_cores"] = idle["cores"]
        out["idle_rss_mb"] = idle["rss_mb"]
        log(
            f"  idle cores {idle['cores']} (system {idle['cores_system']}); RSS services "
            f"{idle['rss_mb_services']} MiB + broker {idle['rss_mb_broker']} MiB"
        )

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

        def probe(rate: float) -> PhaseResult:
            res = _measured(
                procs,
                partial(
                    open_loop,
                    producer,
                    sink,
                    topics.entry,
                    rate,
                    cfg.sustain.duration_s,
                    codec=codec,
                ),
            )
            settle(sink, res.run)
            sc.processes()
            return res

        seed, step = seed_from(sat.throughput, previous_sustained)
        log(f"  sustained-rate search from {seed:.1f}/s (step x{step})")
        found = sustained_search(
            probe, seed, cfg.sustain, dataclasses.replace(cfg.search, step=step), log
        )
        out["sustained"] = found.to_dict()
        log(f"  sustained {found.rate} msg/s (bracket {found.bracket})")

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
            settle(sink, res.run)  # a load above the sustained rate leaves a backlog
            d = res.to_dict()
            d["fraction_of_saturation"] = round(frac, 3)
            loads.append(d)
            log(
                f"  load {rate:.0f} msg/s ({frac:.0%}): p50 {res.latency.p50} p95 "
                f"{res.latency.p95} p99 {res.latency.p99} ms, {res.received}/{res.sent}"
            )
        out["loads"] = loads
        sc.processes()
        time.sleep(1.0)  # let the last phase's commits and flushes settle
        idle = idle_system(procs, sc, broker.pid, cfg.idle_s)
        out["idle_after_load"] = idle
        log(
            f"  idle after load: system {idle['cores_system']} cores, RSS services "
            f"{idle['rss_mb_services']} MiB + broker {idle['rss_mb_broker']} MiB"
        )
        out["peak_rss_mb"] = procs.peak_rss()
        out["cpu_s_per_1k_saturation"] = sat.cpu_s_per_1k
        out["cpu_s_by_process_saturation"] = sat.cpu_s_by_process
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
