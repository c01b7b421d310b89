"""``python -m bench.run [--quick] [--repeats N] [--broker kafka|tansu|both] [--extra MODULE ...]
[--only NAME]``: the benchmark.

First the signing micro-benchmark (``bench.signing``, in process), then every scenario
(1 raw chain, 2 bare Faust, 3 Itinerant no-op runtime, 4 the demo flow)
on its own fresh broker with fresh topics — the embedded Apache Kafka (a new KRaft node per
scenario, its storage in a temporary folder deleted after) unless ``--broker tansu``; ``--broker
both`` runs every scenario on Kafka, then on Tansu, and compares them — then the broker curve
(full run, or ``--curve``), and writes ``bench/results/latest.{json,md}`` plus PNG plots.
``--extra MODULE`` imports a module that defines ``scenarios(quick: bool) -> list[Scenario]``
(see ``bench.scenario``) to run more. ``--repeats`` (3 in the full run, 1 in ``--quick``) runs
every scenario that many times, each on a fresh broker, interleaved (all scenarios, then all again),
so that a drift of the host shows in every scenario's spread rather than in one of them; a
repeat's sustained-rate search starts from the previous repeat's answer.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import broker_curve, report
from bench import signing as signing_bench
from bench.brokers import KINDS, broker_info, unavailable
from bench.faust_chain import FaustChain
from bench.harness import BenchConfig, run_scenario
from bench.host import BUSY_CORES, HostMonitor
from bench.itinerant_demo import BUSIEST_X3, ItinerantDemo
from bench.itinerant_noop import ItinerantNoop
from bench.raw_chain import RawChain
from bench.scenario import Scenario


def baseline_scenarios(quick: bool) -> list[Scenario]:
    """Scenario 1 (raw chain) and scenario 2 (bare Faust chain; both layouts unless quick)."""
    if quick:  # the one-worker layout is informational; --quick must stay under 3 minutes
        return [RawChain(), FaustChain("procs")]
    return [RawChain(), FaustChain("procs"), FaustChain("single")]


def itinerant_scenarios(quick: bool) -> list[Scenario]:
    """Scenario 3 (no-op agents through the runtime) with message signatures required and off,
    and 4 (the demo flow, sagas) in each process layout `itinerant up` offers. The full run
    also runs the demo flow with signatures off, and the shared layout (--quick stays short)."""
    noop = [ItinerantNoop(), ItinerantNoop(signing="off")]
    if quick:
        return [*noop, ItinerantDemo()]
    return [
        *noop,
        ItinerantDemo(),
        ItinerantDemo(signing="off"),
        ItinerantDemo(layout="shared"),
        ItinerantDemo(replicas=BUSIEST_X3),  # 1 vs 3 replicas of the busiest process
        ItinerantDemo(guarantee="exactly_once"),  # what Kafka transactions cost
    ]


def busy_host() -> str | None:
    """Why the host is not quiet enough to benchmark on, or None: a load average above half the
    cores before anything of ours runs means other work shares them."""
    cpus = os.cpu_count() or 1
    load1 = os.getloadavg()[0]
    if load1 > cpus / 2:
        return f"the host is busy (load average {load1:.2f} on {cpus} CPUs before the run)"
    return None


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv: Sequence[str] | None = None, extra: Sequence[Scenario] = ()) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="short run (under 3 minutes on Kafka)")
    ap.add_argument(
        "--broker",
        choices=[*KINDS, "both"],
        default="kafka",
        help="broker every scenario runs on (default: the embedded Apache Kafka); both: Kafka, "
        "then Tansu, compared in the report",
    )
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="MODULE",
        help="module with scenarios(quick) -> list[Scenario] to run after the baseline",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these (scenario names; `signing`: the micro-benchmark)",
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="run every scenario this many times (default: 3, or 1 with --quick)",
    )
    ap.add_argument("--no-curve", action="store_true", help="skip the broker curve")
    ap.add_argument(
        "--curve", action="store_true", help="run the broker curve (on each broker) in --quick too"
    )
    ap.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="results directory")
    ap.add_argument("--stem", default="latest", help="file name stem of the results")
    ap.add_argument("--keep-logs", action="store_true", help="keep the scratch dir with logs")
    args = ap.parse_args(argv)

    kinds = list(KINDS) if args.broker == "both" else [args.broker]
    for kind in kinds:
        why = unavailable(kind)
        if why is not None:
            _log(f"cannot run on {kind}: {why}")
            return 2
    cfg = BenchConfig.for_mode(args.quick)
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    if repeats < 1:
        ap.error("--repeats must be at least 1")
    busy = busy_host()
    if busy:
        _log(f"WARNING: {busy}; the figures of this run will be understated and noisy")
    extra_modules = [importlib.import_module(name) for name in args.extra]

    def scenarios() -> list[Scenario]:
        """Fresh scenario objects for one broker's pass (``extra`` objects are reused)."""
        found: list[Scenario] = [
            *baseline_scenarios(args.quick),
            *itinerant_scenarios(args.quick),
            *extra,
        ]
        for mod in extra_modules:
            found += mod.scenarios(args.quick)
        return [s for s in found if s.name in args.only] if args.only else found

    workdir = Path(tempfile.mkdtemp(prefix="itinerant-bench-"))
    host = HostMonitor().start()
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "quick": cfg.quick,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "brokers": [broker_info(kind) for kind in kinds],
            "partitions": cfg.partitions,
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in os.getloadavg()],
            "config": {k: v for k, v in vars(cfg).items() if k != "extra"},
            "python": sys.version.split()[0],
            "repeats": repeats,
            "busy_before": busy,
            "wall_s_by_broker": {},
        },
        "scenarios": [],
        "broker_curves": {},
    }
    failed = False
    if not args.only or "signing" in args.only:
        _log("signing micro-benchmark (in process: sign, verify, visit chains)")
        try:
            results["signing"] = signing_bench.measure(cfg.quick)
            for line in signing_bench.table(results["signing"])[2:]:
                _log(f"  {line}")
        except Exception as exc:
            failed = True
            results["signing_error"] = f"{type(exc).__name__}: {exc}"
            _log(f"  ERROR {results['signing_error']}")
    run_curve = not args.no_curve and (args.curve or not cfg.quick)
    for kind in kinds:
        t_kind = time.monotonic()
        info = broker_info(kind)
        _log(f"broker {info['name']} {info['version']}")
        sustained: dict[str, float | None] = {}
        for repeat in range(repeats):
            for sc in scenarios():
                _log(f"scenario {sc.name} on {kind} (repeat {repeat + 1}/{repeats}): {sc.title}")
                res = run_scenario(
                    sc,
                    cfg,
                    workdir,
                    _log,
                    broker_kind=kind,
                    previous_sustained=sustained.get(sc.name),
                )
                res["repeat"] = repeat
                res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
                sustained[sc.name] = (res.get("sustained") or {}).get("rate")
                failed |= "error" in res
                results["scenarios"].append(res)
        if run_curve:
            _log(f"broker curve on {kind}")
            levels = broker_curve.QUICK_LEVELS if cfg.quick else broker_curve.FULL_LEVELS
            try:
                points = broker_curve.measure(
                    levels,
                    probes=cfg.curve_probes,
                    log_path=workdir / f"{kind}-curve.log",
                    broker_kind=kind,
                    warm_s=cfg.broker_warm_s,
                )
                results["broker_curves"][kind] = [p.to_dict() for p in points]
                for p in points:
                    _log(f"  {p.batches} batches: p50 {p.latency.p50} p99 {p.latency.p99} ms")
            except Exception as exc:
                failed = True
                err = f"{type(exc).__name__}: {exc}"
                results.setdefault("broker_curve_errors", {})[kind] = err
                _log(f"  ERROR {err}")
        results["meta"]["wall_s_by_broker"][kind] = round(time.monotonic() - t_kind, 1)
    results["meta"]["wall_s"] = round(time.monotonic() - t0, 1)
    results["meta"]["other_cores"] = host.other_cores()
    if results["meta"]["other_cores"] > BUSY_CORES:
        _log(
            f"WARNING: other work used {results['meta']['other_cores']} cores on average during "
            "the run; the figures are understated and noisy"
        )
    results["meta"]["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    for path in report.write(results, args.out, args.stem):
        _log(f"wrote {path}")
    if args.keep_logs or failed:
        _log(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
