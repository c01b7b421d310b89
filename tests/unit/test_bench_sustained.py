"""The benchmark's sustained-throughput method (bench/sustained.py) and its report: the search
against a model system whose capacity is known, and the median/spread over repeats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report, report_sustained
from bench.loadgen import LatencyStats, PhaseResult
from bench.sustained import Criteria, SearchPlan, judge, search, seed_from


def model_system(capacity: float, duration_s: float = 20.0) -> tuple[list[float], object]:
    """A system that delivers everything offered up to ``capacity``; above it the backlog grows,
    so only ``capacity`` per second arrives and the latency climbs with the backlog."""
    offered: list[float] = []

    def probe(rate: float) -> PhaseResult:
        offered.append(rate)
        sent = int(rate * duration_s)
        delivered = min(rate, capacity)
        received = int(delivered * duration_s)
        backlog_s = max(0.0, (rate - capacity) * duration_s / capacity)
        p99 = 40.0 + 1000.0 * backlog_s
        return PhaseResult(
            kind="load",
            offered_rate=rate,
            sent=sent,
            received=received,
            duration_s=duration_s,
            throughput=round(delivered, 1),
            latency=LatencyStats(received, 20.0, 30.0, p99, p99, 25.0),
            max_send_lag_ms=0.0,
            cpu_s_per_1k={"scenario": 2.0},
        )

    return offered, probe


@pytest.mark.parametrize(("capacity", "seed"), [(137.0, 500.0), (137.0, 3.0), (9_000.0, 20.0)])
def test_search_brackets_the_capacity_and_never_claims_more(capacity: float, seed: float) -> None:
    offered, probe = model_system(capacity)
    plan = SearchPlan(precision=0.1, max_probes=12)
    found = search(probe, seed, Criteria(), plan)  # type: ignore[arg-type]
    assert found.rate is not None
    assert found.rate <= capacity
    assert found.rate >= capacity / (1 + plan.precision) * 0.99
    lo, hi = found.bracket
    assert lo == found.rate and hi is not None and hi > capacity
    assert len(found.probes) == len(offered) <= plan.max_probes
    assert found.best is not None and found.best.rate == found.rate


def test_search_stops_at_the_probe_budget_with_the_best_rate_so_far() -> None:
    offered, probe = model_system(1_000.0)
    found = search(probe, 10.0, Criteria(), SearchPlan(max_probes=3))  # type: ignore[arg-type]
    assert offered == [10.0, 20.0, 40.0]
    assert found.rate == 40.0 and found.bracket == (40.0, None)


def test_nothing_sustained_below_the_floor() -> None:
    _, probe = model_system(0.2)
    found = search(probe, 8.0, Criteria(), SearchPlan(floor=1.0))  # type: ignore[arg-type]
    assert found.rate is None
    assert found.probes[-1].rate == 1.0 and not found.probes[-1].passed


def test_judge_names_each_reason() -> None:
    lost = PhaseResult("load", 100.0, 2000, 1500, 20.0, 75.0, LatencyStats(1500, 1, 2, 3, 4, 1), 0)
    probe = judge(lost, Criteria())
    assert not probe.passed
    assert "75% of sent arrived" in probe.why and "delivered 75.0/s" in probe.why
    slow = PhaseResult(
        "load", 100.0, 2000, 2000, 20.0, 99.0, LatencyStats(2000, 1, 2, 1500, 9, 1), 0
    )
    assert judge(slow, Criteria()).why == "p99 1500 ms"
    nothing = PhaseResult("load", 5.0, 100, 0, 0.0, 0.0, LatencyStats.of_ns([]), 0)
    assert "p99 None ms" in judge(nothing, Criteria()).why


def test_a_repeat_starts_near_the_previous_answer() -> None:
    assert seed_from(400.0, None) == (200.0, 2.0)
    assert seed_from(400.0, 150.0) == (150.0, 1.25)
    assert seed_from(None, None) == (10.0, 2.0)


def _run(name: str, slot: str, repeat: int, rate: float | None, cpu: float) -> dict[str, object]:
    at_rate = (
        None if rate is None else {"rate": rate, "p99_ms": 80.0, "cpu_s_per_1k": {"scenario": cpu}}
    )
    return {
        "name": name,
        "title": name,
        "slot": slot,
        "broker": "kafka",
        "repeat": repeat,
        "saturation": {"throughput": 3 * (rate or 1)},
        "sustained": {
            "rate": rate,
            "bracket": [rate, None],
            "criteria": {"duration_s": 20.0, "min_delivered": 0.95, "p99_ms": 1000.0},
            "at_rate": at_rate,
            "probes": [
                {"rate": rate or 1.0, "passed": rate is not None, "delivered_rate": rate or 0.5}
            ],
        },
    }


def test_report_takes_the_median_repeat_and_shows_the_spread(tmp_path: Path) -> None:
    runs = [
        _run("faust", "s2", 0, 100.0, 1.0),
        _run("noop", "s3", 0, 30.0, 5.0),
        _run("faust", "s2", 1, 140.0, 1.0),
        _run("noop", "s3", 1, 40.0, 4.0),
        _run("faust", "s2", 2, 120.0, 1.2),
        _run("noop", "s3", 2, 36.0, 4.5),
    ]
    results = {"meta": {"repeats": 3, "cpus": 2, "brokers": [{"kind": "kafka", "name": "Kafka"}]}}
    results["scenarios"] = runs
    medians = report.scenarios_on(results, "kafka")
    assert [(sc["name"], sc["repeat"]) for sc in medians] == [("faust", 2), ("noop", 2)]
    spread = report_sustained.spread([r for r in runs if r["name"] == "faust"])
    assert spread["median"] == 120.0 and spread["min"] == 100.0 and spread["max"] == 140.0
    assert spread["spread"] == round(40 / 120, 3)
    targets = {name: (value, ok) for name, value, ok in report.targets(medians)}
    value, ok = targets["no-op runtime >= 80% of bare Faust's sustained throughput (s3/s2)"]
    assert value == "30.0%" and ok is False
    value, ok = targets[
        "no-op runtime CPU per message <= 1.5x bare Faust's (each at its sustained rate)"
    ]
    assert value == f"{4.5 / 1.2:.2f}x" and ok is False
    paths = report.write(results, tmp_path, "t")
    text = (tmp_path / "t.md").read_text()
    assert "| faust | 120 | 100 | 140 | 33% | 3/3 |" in text
    assert (
        json.loads((tmp_path / "t.json").read_text())["sustained_spread"]["kafka"]["noop"]["median"]
        == 36.0
    )
    assert tmp_path / "t_sustained_kafka.png" in paths
