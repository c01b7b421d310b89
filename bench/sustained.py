"""Sustained throughput: the highest open-loop offered rate a system keeps up with.

A burst ("saturation": send N messages as fast as possible, divide by the time the last one took)
measures how fast a queue drains, not what a system sustains: a chain that "saturates" at 40,000
msg/s can fail to deliver 10,000 msg/s offered steadily. So the headline figure of the benchmark
is found by search (docs/benchmarks.md#method):

- a **probe** offers ``rate`` msg/s open loop for ``duration_s`` (at least 20 s in the full run);
- it **passes** when the delivered rate is at least ``min_delivered`` (95%) of the offered rate,
  at least that share of what was sent arrived, and the p99 latency (from intended send time) is
  under ``p99_ms`` (1 s);
- the **search** starts from a seed (half the burst rate, or the previous repeat's result),
  multiplies or divides by ``step`` until it has a passing rate below a failing one, then bisects
  (geometrically) until the two are within ``precision`` of each other or the probe budget is
  spent. The sustained throughput is the highest passing rate.

Between probes the pipeline is drained (``settle``), so a failed probe's backlog does not count
against the next.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.loadgen import PhaseResult


@dataclass(frozen=True)
class Criteria:
    duration_s: float = 20.0
    min_delivered: float = 0.95
    p99_ms: float = 1000.0


@dataclass(frozen=True)
class SearchPlan:
    step: float = 2.0  # factor between probes until the sustained rate is bracketed
    precision: float = 0.1  # stop when failing/passing <= 1 + precision
    max_probes: int = 7
    floor: float = 0.5  # msg/s: below this nothing is sustained
    ceiling: float = 50_000.0  # msg/s: the load generator's own limit on this host


@dataclass
class Probe:
    rate: float
    passed: bool
    why: str
    delivered_rate: float
    delivered_share: float
    p99_ms: float | None
    received: int
    sent: int
    cpu_s_per_1k: dict[str, float] = field(default_factory=dict)


@dataclass
class Sustained:
    rate: float | None  # the highest passing rate; None when even the floor failed
    bracket: tuple[float | None, float | None]  # (highest passing, lowest failing)
    probes: list[Probe]
    criteria: Criteria

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "bracket": list(self.bracket),
            "probes": [asdict(p) for p in self.probes],
            "criteria": asdict(self.criteria),
            "at_rate": asdict(self.best) if self.best else None,
        }

    @property
    def best(self) -> Probe | None:
        passing = [p for p in self.probes if p.passed]
        return max(passing, key=lambda p: p.rate) if passing else None


def judge(res: PhaseResult, crit: Criteria) -> Probe:
    """Whether one probe's outcome is sustained under ``crit``, and why not."""
    rate = float(res.offered_rate or 0.0)
    share = res.received / res.sent if res.sent else 0.0
    delivered = float(res.throughput)
    p99 = res.latency.p99 if res.received else None
    reasons = []
    if share < crit.min_delivered:
        reasons.append(f"{share:.0%} of sent arrived")
    if delivered < crit.min_delivered * rate:
        reasons.append(f"delivered {delivered:.1f}/s of {rate:.1f}/s")
    if p99 is None or math.isnan(p99) or p99 >= crit.p99_ms:
        reasons.append(f"p99 {p99} ms")
    return Probe(
        rate=rate,
        passed=not reasons,
        why="; ".join(reasons) or "sustained",
        delivered_rate=delivered,
        delivered_share=round(share, 4),
        p99_ms=p99,
        received=res.received,
        sent=res.sent,
        cpu_s_per_1k=dict(res.cpu_s_per_1k),
    )


def search(
    probe: Callable[[float], PhaseResult],
    seed: float,
    crit: Criteria,
    plan: SearchPlan = SearchPlan(),
    log: Callable[[str], None] = lambda _msg: None,
) -> Sustained:
    """Find the sustained rate by probing ``probe(rate)`` (see the module doc)."""
    probes: list[Probe] = []
    lo: float | None = None  # highest passing rate
    hi: float | None = None  # lowest failing rate

    def run(rate: float) -> bool:
        p = judge(probe(rate), crit)
        probes.append(p)
        log(f"    probe {rate:.1f}/s: {'pass' if p.passed else 'FAIL'} ({p.why})")
        return p.passed

    rate = min(max(seed, plan.floor), plan.ceiling)
    while len(probes) < plan.max_probes:
        if lo is not None and hi is not None:
            if hi / lo <= 1 + plan.precision:
                break
            rate = math.sqrt(lo * hi)
        elif lo is not None:  # everything so far passed: go up
            if lo >= plan.ceiling:
                break
            rate = min(lo * plan.step, plan.ceiling)
        elif hi is not None:  # everything so far failed: go down
            if hi <= plan.floor:
                break
            rate = max(hi / plan.step, plan.floor)
        rate = round(rate, 1)
        if run(rate):
            lo = rate if lo is None else max(lo, rate)
        else:
            hi = rate if hi is None else min(hi, rate)
    return Sustained(rate=lo, bracket=(lo, hi), probes=probes, criteria=crit)


def seed_from(burst_rate: float | None, previous: float | None) -> tuple[float, float]:
    """Where to start and the step to use: near a previous repeat's answer with a fine step, else
    at half the burst rate with a coarse one."""
    if previous:
        return previous, 1.25
    if burst_rate and burst_rate > 0:
        return burst_rate / 2, 2.0
    return 10.0, 2.0
