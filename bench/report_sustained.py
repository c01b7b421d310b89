"""The sustained-throughput part of the report: repeats grouped by scenario, the median run, the
spread over repeats, and the plot of every probe (bench.sustained)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def runs_by_name(scenarios: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The runs of each scenario (one per repeat), in first-run order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for sc in scenarios:
        out.setdefault(sc["name"], []).append(sc)
    return out


def sustained_rate(sc: dict[str, Any]) -> float | None:
    rate = (sc.get("sustained") or {}).get("rate")
    return float(rate) if rate is not None else None


def representative(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose sustained rate is the median of the repeats (the lower middle one of an even
    count); without any sustained rate, the first run without an error (else the first)."""
    ok = [sc for sc in runs if "error" not in sc]
    rated = sorted((sc for sc in ok if sustained_rate(sc) is not None), key=sustained_rate_key)
    if rated:
        return rated[(len(rated) - 1) // 2]
    return ok[0] if ok else runs[0]


def sustained_rate_key(sc: dict[str, Any]) -> float:
    return sustained_rate(sc) or 0.0


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of the sustained rate over the repeats, and the relative spread."""
    rates = [r for r in (sustained_rate(sc) for sc in runs if "error" not in sc) if r is not None]
    if not rates:
        return {"n": 0, "median": None, "min": None, "max": None, "spread": None, "rates": []}
    med = statistics.median(rates)
    return {
        "n": len(rates),
        "median": round(med, 1),
        "min": min(rates),
        "max": max(rates),
        "spread": round((max(rates) - min(rates)) / med, 3) if med else None,
        "rates": rates,
    }


def at_rate(sc: dict[str, Any]) -> dict[str, Any]:
    """The highest passing probe of a run (its CPU per 1,000 and p99), or {}."""
    return (sc.get("sustained") or {}).get("at_rate") or {}


def cpu_per_1k_sustained(sc: dict[str, Any]) -> float | None:
    cpu = at_rate(sc).get("cpu_s_per_1k") or {}
    value = cpu.get("scenario")
    return float(value) if value is not None else None


def lines(scenarios: list[dict[str, Any]], fmt: Any) -> list[str]:
    """The sustained-throughput table of one broker's runs."""
    groups = runs_by_name(scenarios)
    if not any(sc.get("sustained") for sc in scenarios):
        return []
    crit: dict[str, Any] = next(
        (sc["sustained"]["criteria"] for sc in scenarios if sc.get("sustained")), {}
    )
    out = [
        "",
        "Sustained throughput (the highest open-loop offered rate delivered at >= "
        f"{crit.get('min_delivered', 0.95):.0%} with p99 < {crit.get('p99_ms', 1000):.0f} ms over "
        f"{crit.get('duration_s', 20):.0f} s probes; found by search; median of the repeats):",
        "",
        "| scenario | sustained /s (median) | min | max | spread | repeats | probes (median run) "
        "| p99 ms at rate | CPU s/1k at rate | burst /s (median run) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in groups.items():
        s = spread(runs)
        rep = representative(runs)
        probes = (rep.get("sustained") or {}).get("probes") or []
        burst = (rep.get("saturation") or {}).get("throughput")
        rel = "—" if s["spread"] is None else f"{s['spread']:.0%}"
        out.append(
            f"| {rep.get('title', name)} | {fmt(s['median'])} | {fmt(s['min'])} | "
            f"{fmt(s['max'])} | {rel} | "
            f"{s['n']}/{len(runs)} | {len(probes)} | {fmt(at_rate(rep).get('p99_ms'))} | "
            f"{fmt(cpu_per_1k_sustained(rep))} | {fmt(burst)} |"
        )
    return out


def plot(scenarios: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Every probe of every run: delivered share of the offered rate against the offered rate,
    passing probes filled; False (nothing written) without probes."""
    groups = runs_by_name([sc for sc in scenarios if sc.get("sustained")])
    if not groups:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, (name, runs) in enumerate(groups.items()):
        color = plt.get_cmap("tab10")(i % 10)
        probes = [p for sc in runs for p in sc["sustained"]["probes"] if p["rate"]]
        for passed in (True, False):
            chosen = [p for p in probes if p["passed"] is passed]
            ax.scatter(
                [p["rate"] for p in chosen],
                [p["delivered_rate"] / p["rate"] for p in chosen],
                marker="o",
                color=color if passed else "none",
                edgecolors=color,
                label=runs[0].get("title", name) if passed else None,
            )
    ax.axhline(0.95, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("offered rate (open loop, per second)")
    ax.set_ylabel("delivered / offered")
    ax.set_title(f"Sustained-rate probes on {title} (filled: passed)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
