"""Writes benchmark results: JSON, a Markdown summary with ratio columns, and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Ratio columns of the report: (numerator slot, denominator slot). s4 (the demo flow) counts
# sagas, not messages, so it has no ratio row; its targets are checked in their own section.
RATIO_PAIRS: tuple[tuple[str, str], ...] = (("s2", "s1"), ("s2b", "s1"), ("s3", "s2"))


def _load_at(sc: dict[str, Any], which: str) -> dict[str, Any] | None:
    """The load phase at ``which``: "100" (msg/s) or "25%"/"50%" of saturation."""
    loads: list[dict[str, Any]] = sc.get("loads", [])
    if which.endswith("%"):
        frac = float(which[:-1]) / 100.0
        cands = [ld for ld in loads if abs(ld.get("fraction_of_saturation", -1) - frac) < 0.02]
    else:
        cands = [ld for ld in loads if ld.get("offered_rate") == float(which)]
    return cands[0] if cands else None


def headline(sc: dict[str, Any]) -> dict[str, float | None]:
    """The comparable figures of one scenario (None where not measured)."""

    def lat(which: str, q: str) -> float | None:
        ld = _load_at(sc, which)
        return None if ld is None else ld["latency"][q]

    sat = sc.get("saturation") or {}
    cpu = sc.get("cpu_s_per_1k_saturation") or {}
    rss = sc.get("peak_rss_mb") or {}
    idle = sc.get("idle_cores") or {}
    return {
        "saturation_msg_s": sat.get("throughput"),
        "p50_ms@100": lat("100", "p50"),
        "p99_ms@100": lat("100", "p99"),
        "p50_ms@25%": lat("25%", "p50"),
        "p99_ms@25%": lat("25%", "p99"),
        "p50_ms@50%": lat("50%", "p50"),
        "p99_ms@50%": lat("50%", "p99"),
        "cpu_s_per_1k_scenario": cpu.get("scenario"),
        "cpu_s_per_1k_broker": cpu.get("broker"),
        "idle_cores_scenario": idle.get("scenario"),
        "peak_rss_mb_scenario_total": round(
            sum(v for k, v in rss.items() if k.startswith("scenario/")), 1
        )
        if rss
        else None,
    }


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None] | None]:
    by_slot = {
        sc["slot"]: headline(sc)
        for sc in results.get("scenarios", [])
        if sc.get("slot") and "error" not in sc
    }
    out: dict[str, dict[str, float | None] | None] = {}
    for num, den in RATIO_PAIRS:
        key = f"{num}/{den}"
        if num not in by_slot or den not in by_slot:
            out[key] = None  # slot left for a later scenario
            continue
        a, b = by_slot[num], by_slot[den]
        out[key] = {
            k: (round(a[k] / b[k], 3) if a[k] is not None and b[k] else None)  # type: ignore[operator]
            for k in a
        }
    return out


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets: (what, measured value as text, met?) — None where not measured."""
    by_slot = {
        sc["slot"]: sc
        for sc in results.get("scenarios", [])
        if sc.get("slot") and "error" not in sc
    }
    out: list[tuple[str, str, bool | None]] = []

    def add(name: str, value: float | None, ok: bool | None, fmt: str) -> None:
        out.append(
            (name, "—" if value is None else fmt.format(value), None if value is None else ok)
        )

    s2, s3, s4 = by_slot.get("s2"), by_slot.get("s3"), by_slot.get("s4")
    if s2 and s3:
        h2, h3 = headline(s2), headline(s3)
        r = (
            h3["saturation_msg_s"] / h2["saturation_msg_s"]
            if h3["saturation_msg_s"] and h2["saturation_msg_s"]
            else None
        )
        add(
            "no-op runtime >= 80% of bare Faust throughput (s3/s2)",
            r,
            r is not None and r >= 0.8,
            "{:.1%}",
        )
        r = h3["p50_ms@100"] / h2["p50_ms@100"] if h3["p50_ms@100"] and h2["p50_ms@100"] else None
        add(
            "no-op runtime p50 at 100 msg/s <= 1.3x bare Faust",
            r,
            r is not None and r <= 1.3,
            "{:.2f}x",
        )
    if s4:
        sat = (s4.get("saturation") or {}).get("throughput")
        add(
            "demo flow 100 sagas/s (saturation)",
            sat,
            sat is not None and sat >= 100,
            "{:.0f} sagas/s",
        )
        ld = _load_at(s4, "25")
        p99 = ld["latency"]["p99"] if ld else None
        add(
            "p99 publish->result < 500 ms at 25 sagas/s",
            p99,
            p99 is not None and p99 < 500,
            "{:.0f} ms",
        )
        idle = s4.get("idle_cores") or {}
        sysidle = (idle.get("scenario") or 0) + (idle.get("broker") or 0) if idle else None
        add(
            "idle system < 0.3 core (6 services + broker)",
            sysidle,
            sysidle is not None and sysidle < 0.3,
            "{:.2f} cores",
        )
        rss = s4.get("idle_rss_mb") or {}
        worst = max(rss.values()) if rss else None
        add(
            "idle service < 100 MB RSS (largest)",
            worst,
            worst is not None and worst < 100,
            "{:.0f} MiB",
        )
        resume = (s4.get("extra") or {}).get("saga_after_kill_s")
        add(
            "restarted coordinator resumes in < 5 s (kill -9 -> saga done)",
            resume,
            resume is not None and resume < 5,
            "{:.1f} s",
        )
    return out


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _busy_warning(meta: dict[str, Any]) -> list[str]:
    cpus = meta.get("cpus") or 1
    loads = [*(meta.get("loadavg_before") or []), *(meta.get("loadavg") or [])]
    if loads and max(loads) > cpus:
        return [
            f"- **WARNING: the host was busy (load average up to {max(loads)} on {cpus} CPUs, "
            "other work sharing the cores); throughput and latency are understated and noisy. "
            "Re-run on a quiet host before quoting them.**"
        ]
    return []


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    lines = [
        "# Benchmark results",
        "",
        f"- mode: {'quick' if meta.get('quick') else 'full'}; started {meta.get('started')}; "
        f"wall {meta.get('wall_s')} s; host: {meta.get('cpus')} CPUs, load avg "
        f"{meta.get('loadavg')}",
        f"- broker: Tansu {meta.get('broker')} (memory engine), one fresh broker per scenario; "
        f"{meta.get('partitions')} partitions per topic; 5 hops per chain; "
        "latency from intended send time (open loop).",
        "- CPU per 1,000 messages is measured over the saturation run; idle cores over a "
        "quiet period after warm-up.",
        *_busy_warning(meta),
        "",
        "## Summary",
        "",
    ]
    cols = list(headline({}).keys())
    lines.append("| scenario | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for sc in results.get("scenarios", []):
        if "error" in sc:
            lines.append(f"| {sc['title']} | error: {sc['error']} |")
            continue
        h = headline(sc)
        lines.append(f"| {sc['title']} | " + " | ".join(_fmt(h[c]) for c in cols) + " |")
    lines += [
        "",
        "## Ratios",
        "",
        "s1 = raw chain, s2 = bare Faust chain (one worker per agent), s2b = bare Faust chain "
        "(one worker, five agents; full run only), s3 = Itinerant's runtime with five no-op "
        "agents (one worker each). s4, the demo flow, counts sagas (its msg/s columns are "
        "sagas/s, CPU per 1,000 sagas) and has no ratio row. A ratio "
        "above 1 means the numerator has more of that figure (throughput: better; latency, "
        "CPU, RSS: worse). Latency at 25%/50% compares each scenario at its own share of its "
        "own saturation.",
        "",
    ]
    lines.append("| ratio | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for key, row in ratios(results).items():
        if row is None:
            lines.append(f"| {key} | " + " | ".join("—" for _ in cols) + " |")
        else:
            lines.append(f"| {key} | " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    lines += ["", "## Targets (reported, not asserted)", ""]
    lines.append("| target | measured | met |")
    lines.append("|---|---|---|")
    for name, value, ok in targets(results):
        lines.append(f"| {name} | {value} | {'—' if ok is None else ('yes' if ok else 'NO')} |")
    extras = [(sc["name"], sc["extra"]) for sc in results.get("scenarios", []) if sc.get("extra")]
    for name, extra in extras:
        lines += ["", f"### {name}: extra measurements", "", "```", json.dumps(extra), "```"]
    lines += ["", "## Latency by offered load", ""]
    lines.append(
        "| scenario | offered msg/s | of sat. | achieved msg/s | p50 ms | p95 ms | p99 ms | "
        "max ms | received/sent | CPU s/1k scen. | CPU s/1k broker |"
    )
    lines.append("|---" * 11 + "|")
    for sc in results.get("scenarios", []):
        for ld in sc.get("loads", []):
            lat = ld["latency"]
            cpu = ld.get("cpu_s_per_1k", {})
            lines.append(
                f"| {sc['name']} | {_fmt(ld['offered_rate'])} | "
                f"{ld['fraction_of_saturation']:.1%} | {_fmt(ld['throughput'])} | "
                f"{_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | "
                f"{_fmt(lat['max'])} | {ld['received']}/{ld['sent']} | "
                f"{_fmt(cpu.get('scenario'))} | {_fmt(cpu.get('broker'))} |"
            )
    lines += ["", "## Peak RSS (MiB) per process", ""]
    for sc in results.get("scenarios", []):
        rss = sc.get("peak_rss_mb")
        if rss:
            lines.append(f"- {sc['name']}: " + ", ".join(f"{k} {v}" for k, v in rss.items()))
    curve = results.get("broker_curve") or []
    if curve:
        lines += [
            "",
            "## Broker curve (one hop, one partition, fetch wait 10 ms)",
            "",
            "| stored batches | p50 ms | p95 ms | p99 ms | max ms | probes lost |",
            "|---|---|---|---|---|---|",
        ]
        for pt in curve:
            lat = pt["latency"]
            lines.append(
                f"| {pt['batches']} | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | "
                f"{_fmt(lat['p99'])} | {_fmt(lat['max'])} | {pt['lost']} |"
            )
    lines.append("")
    return "\n".join(lines)


def plot_latency(results: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(8, 5))
    for sc in results.get("scenarios", []):
        loads = sorted(sc.get("loads", []), key=lambda d: d["offered_rate"])
        if not loads:
            continue
        x = [d["offered_rate"] for d in loads]
        (line,) = ax.plot(
            x, [d["latency"]["p50"] for d in loads], marker="o", label=f"{sc['title']} p50"
        )
        ax.plot(
            x,
            [d["latency"]["p99"] for d in loads],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{sc['title']} p99",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (msg/s, open loop)")
    ax.set_ylabel("end-to-end latency, 5 hops (ms)")
    ax.set_title("Latency vs offered load")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curve(results: dict[str, Any], path: Path) -> None:
    curve = results.get("broker_curve") or []
    if not curve:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [p["batches"] for p in curve]
    for q, style in (("p50", "-o"), ("p99", "--x")):
        ax.plot(x, [p["latency"][q] for p in curve], style, label=q)
    ax.set_xlabel("record batches stored in the partition")
    ax.set_ylabel("one-hop transit (ms)")
    ax.set_title("Tansu memory engine: transit vs stored batches")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _clean(v: Any) -> Any:
    """NaN is not JSON: turn it into null, recursively."""
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v


def write(results: dict[str, Any], outdir: Path = RESULTS_DIR, stem: str = "latest") -> list[Path]:
    """Write ``<stem>.json``, ``<stem>.md`` and the PNG plots; return the paths written."""
    outdir.mkdir(parents=True, exist_ok=True)
    results = _clean(dict(results))
    results["ratios"] = ratios(results)
    paths = [outdir / f"{stem}.json", outdir / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(results))
    lat_png, curve_png = outdir / f"{stem}_latency.png", outdir / f"{stem}_broker_curve.png"
    plot_latency(results, lat_png)
    paths.append(lat_png)
    if results.get("broker_curve"):
        plot_curve(results, curve_png)
        paths.append(curve_png)
    return paths
