"""Writes benchmark results: JSON, a Markdown summary per broker with ratio columns, the idle
system, Kafka against Tansu when both ran, and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import report_signing, report_sustained
from bench.host import BUSY_CORES

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


def broker_kinds(results: dict[str, Any]) -> list[str]:
    """The brokers of a run, in run order (results before brokers were named: Tansu)."""
    infos = (results.get("meta") or {}).get("brokers")
    if infos:
        return [info["kind"] for info in infos]
    kinds = list(dict.fromkeys(sc.get("broker", "tansu") for sc in results.get("scenarios", [])))
    return kinds or ["tansu"]


def broker_label(results: dict[str, Any], kind: str) -> str:
    """ "Apache Kafka 4.1.1", "Tansu v0.6.0-…" — as the run's metadata names it."""
    meta = results.get("meta") or {}
    for info in meta.get("brokers") or []:
        if info["kind"] == kind:
            version = info.get("version")
            return f"{info['name']} {version}" if version else str(info["name"])
    if kind == "tansu" and meta.get("broker"):  # results written before brokers were named
        return f"Tansu {meta['broker']}"
    return {"kafka": "Apache Kafka", "tansu": "Tansu"}.get(kind, kind)


def all_runs_on(results: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """Every run on ``kind``: one per scenario and repeat."""
    return [sc for sc in results.get("scenarios", []) if sc.get("broker", "tansu") == kind]


def scenarios_on(results: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    """One run per scenario on ``kind``: the repeat with the median sustained rate."""
    groups = report_sustained.runs_by_name(all_runs_on(results, kind))
    return [report_sustained.representative(runs) for runs in groups.values()]


def representatives(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [sc for kind in broker_kinds(results) for sc in scenarios_on(results, kind)]


def _idle(sc: dict[str, Any], key: str = "idle") -> dict[str, Any]:
    """The idle-system record of a scenario (rebuilt from older results' idle fields)."""
    idle = sc.get(key)
    if idle:
        return dict(idle)
    if key != "idle" or not sc.get("idle_cores"):
        return {}
    cores = sc["idle_cores"]
    services = sc.get("idle_rss_mb") or {}
    return {
        "cores": cores,
        "cores_system": round(cores.get("scenario", 0.0) + cores.get("broker", 0.0), 4),
        "rss_mb": services,
        "rss_mb_services": round(sum(services.values()), 1) if services else None,
        "rss_mb_broker": None,
        "rss_mb_system": None,
    }


def headline(sc: dict[str, Any]) -> dict[str, float | None]:
    """The comparable figures of one scenario (None where not measured)."""

    def lat(which: str, q: str) -> float | None:
        ld = _load_at(sc, which)
        return None if ld is None else ld["latency"][q]

    sat = sc.get("saturation") or {}
    cpu = sc.get("cpu_s_per_1k_saturation") or {}
    rss = sc.get("peak_rss_mb") or {}
    idle = _idle(sc)
    cores = idle.get("cores") or {}
    later = _idle(sc, "idle_after_load")
    broker_rss = [v for k, v in rss.items() if k.startswith("broker/")]
    return {
        "sustained_msg_s": report_sustained.sustained_rate(sc),
        "cpu_s_per_1k_sustained": report_sustained.cpu_per_1k_sustained(sc),
        "saturation_msg_s": sat.get("throughput"),
        "p50_ms@100": lat("100", "p50"),
        "p99_ms@100": lat("100", "p99"),
        "p50_ms@25%": lat("25%", "p50"),
        "p99_ms@25%": lat("25%", "p99"),
        "p50_ms@50%": lat("50%", "p50"),
        "p99_ms@50%": lat("50%", "p99"),
        "cpu_s_per_1k_scenario": cpu.get("scenario"),
        "cpu_s_per_1k_broker": cpu.get("broker"),
        "idle_cores_scenario": cores.get("scenario"),
        "idle_cores_broker": cores.get("broker"),
        "idle_cores_system_after_load": later.get("cores_system"),
        "idle_rss_mb_system": idle.get("rss_mb_system"),
        "idle_rss_mb_system_after_load": later.get("rss_mb_system"),
        "peak_rss_mb_scenario_total": round(
            sum(v for k, v in rss.items() if k.startswith("scenario/")), 1
        )
        if rss
        else None,
        "peak_rss_mb_broker": broker_rss[0] if broker_rss else None,
        "broker_start_s": sc.get("broker_start_s"),
    }


# Columns of the ratio table (a ratio of broker start times or of idle memory says little).
RATIO_COLUMNS = (
    "sustained_msg_s",
    "cpu_s_per_1k_sustained",
    "saturation_msg_s",
    "p50_ms@100",
    "p99_ms@100",
    "p50_ms@25%",
    "p99_ms@25%",
    "p50_ms@50%",
    "p99_ms@50%",
    "cpu_s_per_1k_scenario",
    "cpu_s_per_1k_broker",
    "idle_cores_scenario",
    "peak_rss_mb_scenario_total",
)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(scenarios: list[dict[str, Any]]) -> dict[str, dict[str, float | None] | None]:
    """The ratio rows (RATIO_PAIRS) of the scenarios of one broker."""
    by_slot = {sc["slot"]: headline(sc) for sc in scenarios if sc.get("slot") and "error" not in sc}
    out: dict[str, dict[str, float | None] | None] = {}
    for num, den in RATIO_PAIRS:
        key = f"{num}/{den}"
        if num not in by_slot or den not in by_slot:
            out[key] = None  # slot left for a later scenario
            continue
        a, b = by_slot[num], by_slot[den]
        out[key] = {k: _ratio(a[k], b[k]) for k in RATIO_COLUMNS}
    return out


def targets(scenarios: list[dict[str, Any]]) -> list[tuple[str, str, bool | None]]:
    """The issue's targets on one broker: (what, measured value as text, met?) — None where not
    measured."""
    by_slot = {sc["slot"]: sc for sc in scenarios if sc.get("slot") and "error" not in sc}
    out: list[tuple[str, str, bool | None]] = []

    def add(name: str, value: float | None, ok: bool | None, fmt: str) -> None:
        out.append(
            (name, "—" if value is None else fmt.format(value), None if value is None else ok)
        )

    s2, s3, s4 = by_slot.get("s2"), by_slot.get("s3"), by_slot.get("s4")
    if s2 and s3:
        h2, h3 = headline(s2), headline(s3)
        r = _ratio(h3["sustained_msg_s"], h2["sustained_msg_s"])
        add(
            "no-op runtime >= 80% of bare Faust's sustained throughput (s3/s2)",
            r,
            r is not None and r >= 0.8,
            "{:.1%}",
        )
        r = _ratio(h3["cpu_s_per_1k_sustained"], h2["cpu_s_per_1k_sustained"])
        add(
            "no-op runtime CPU per message <= 1.5x bare Faust's (each at its sustained rate)",
            r,
            r is not None and r <= 1.5,
            "{:.2f}x",
        )
    if s4:
        rate = report_sustained.sustained_rate(s4)
        add(
            "demo flow >= 100 sagas/s sustained",
            rate,
            rate is not None and rate >= 100,
            "{:.1f} sagas/s",
        )
        ld = _load_at(s4, "50")
        p99 = ld["latency"]["p99"] if ld else None
        add(
            "p99 publish->result < 500 ms at 50 sagas/s",
            p99,
            p99 is not None and p99 < 500,
            "{:.0f} ms",
        )
        # At rest after the load phases: right after start a JVM broker is still compiling
        # (and every service settling), which the "after start" figure (idle table) includes.
        later = _idle(s4, "idle_after_load")
        sysidle = later.get("cores_system", _idle(s4).get("cores_system"))
        add(
            "idle system < 0.15 core (every service + broker; at rest after the load)",
            sysidle,
            sysidle is not None and sysidle < 0.15,
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
            "kill -9'd coordinator resumes in < 3 s (kill -9 -> saga done)",
            resume,
            resume is not None and resume < 3,
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
    """A loud line when other work shared the cores (bench/host.py), or the host was busy at the
    start; older results: a load average above the core count."""
    cpus = meta.get("cpus") or 1
    other = meta.get("other_cores")
    why = []
    if meta.get("busy_before"):
        why.append(str(meta["busy_before"]))
    if other is not None and other > BUSY_CORES:
        why.append(f"other work used {other} of {cpus} cores on average during the run")
    loads = [*(meta.get("loadavg_before") or []), *(meta.get("loadavg") or [])]
    if other is None and loads and max(loads) > cpus:
        why.append(f"load average up to {max(loads)} on {cpus} CPUs")
    if why:
        return [
            f"- **WARNING: the host was busy ({'; '.join(why)}); throughput and latency are "
            "understated and noisy. Re-run on a quiet host before quoting them.**"
        ]
    if other is not None:
        return [f"- host quiet: other work used {other} cores on average during the run."]
    return []


def _broker_lines(results: dict[str, Any]) -> list[str]:
    meta = results.get("meta") or {}
    infos = meta.get("brokers")
    if not infos:  # results written before brokers were named
        return [f"- broker: Tansu {meta.get('broker')} (memory engine)"]
    lines = []
    for info in infos:
        wall = (meta.get("wall_s_by_broker") or {}).get(info["kind"])
        lines.append(
            f"- broker: **{broker_label(results, info['kind'])}** ({info.get('setup')}; consumer "
            f"fetch wait {info.get('fetch_wait_ms')} ms for the services, the baselines and the "
            f"sink)" + (f"; its scenarios took {wall} s" if wall is not None else "")
        )
    return lines


def _table(cols: list[str], rows: list[tuple[str, dict[str, Any] | None]]) -> list[str]:
    lines = ["| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, row in rows:
        cells = ["—" for _ in cols] if row is None else [_fmt(row.get(c)) for c in cols]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _summary(results: dict[str, Any], kind: str) -> list[str]:
    scenarios = scenarios_on(results, kind)
    cols = list(headline({}).keys())
    lines = ["| scenario | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for sc in scenarios:
        if "error" in sc:
            lines.append(f"| {sc['title']} | error: {sc['error']} |")
            continue
        h = headline(sc)
        lines.append(f"| {sc['title']} | " + " | ".join(_fmt(h[c]) for c in cols) + " |")
    lines += report_sustained.lines(all_runs_on(results, kind), _fmt)
    lines += ["", "Ratios (the median run of each scenario):", ""]
    lines += _table(list(RATIO_COLUMNS), list(ratios(scenarios).items()))
    lines += ["", "Targets (reported, not asserted):", ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    for name, value, ok in targets(scenarios):
        lines.append(f"| {name} | {value} | {'—' if ok is None else ('yes' if ok else 'NO')} |")
    return lines


# The figures the broker comparison puts side by side (Kafka | Tansu | Kafka/Tansu).
COMPARE_COLUMNS = (
    ("saturation_msg_s", "saturation msg/s"),
    ("p50_ms@25%", "p50 ms @25%"),
    ("p99_ms@25%", "p99 ms @25%"),
    ("p50_ms@100", "p50 ms @100"),
    ("cpu_s_per_1k_scenario", "CPU s/1k scenario"),
    ("cpu_s_per_1k_broker", "CPU s/1k broker"),
    ("idle_cores_system", "idle cores system after start"),
    ("idle_cores_system_after_load", "idle cores system after load"),
    ("idle_rss_mb_system_after_load", "idle RSS system after load MiB"),
    ("peak_rss_mb_broker", "peak RSS broker MiB"),
    ("broker_start_s", "broker start s"),
)


def comparison(results: dict[str, Any], a: str, b: str) -> list[dict[str, Any]]:
    """Per scenario run on both brokers: each figure of COMPARE_COLUMNS on ``a``, on ``b``, a/b."""
    on_b = {sc["name"]: sc for sc in scenarios_on(results, b) if "error" not in sc}
    rows = []
    for sc in scenarios_on(results, a):
        other = on_b.get(sc["name"])
        if other is None or "error" in sc:
            continue
        ha, hb = headline(sc), headline(other)
        ha["idle_cores_system"] = _idle(sc).get("cores_system")
        hb["idle_cores_system"] = _idle(other).get("cores_system")
        rows.append(
            {
                "name": sc["name"],
                "title": sc["title"],
                **{k: (ha[k], hb[k], _ratio(ha[k], hb[k])) for k, _ in COMPARE_COLUMNS},
            }
        )
    return rows


def _comparison_lines(results: dict[str, Any], a: str, b: str) -> list[str]:
    rows = comparison(results, a, b)
    if not rows:
        return []
    la, lb = broker_label(results, a), broker_label(results, b)
    lines = [
        "",
        f"## {la} vs {lb}",
        "",
        f"Each cell: {a} / {b} (ratio {a}/{b}). Same scenarios, same load schedule, each on "
        "its own fresh broker; the services tune themselves by broker (fetch wait, idempotent "
        "producers except on Tansu).",
        "",
        "| scenario | " + " | ".join(label for _, label in COMPARE_COLUMNS) + " |",
        "|---" * (len(COMPARE_COLUMNS) + 1) + "|",
    ]
    for row in rows:
        cells = []
        for key, _ in COMPARE_COLUMNS:
            va, vb, r = row[key]
            cells.append(f"{_fmt(va)} / {_fmt(vb)} ({_fmt(r)})")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return lines


def _idle_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Idle system (every service + the broker, nothing sent)",
        "",
        "Cores used and resident memory of the scenario's processes (for S4: coordinator and "
        "agents, as `itinerant up` runs them) and of the broker (the Kafka JVM or the Tansu "
        "process), over a quiet period right after warm-up and again after the load phases "
        "(JIT warm, heap grown). The load generator (producer and sink, connected and polling) "
        "is not counted in the system; its fetches are the broker's work, though.",
        "",
        "| broker | scenario | cores services | cores broker | cores system | RSS services MiB "
        "| RSS broker MiB | RSS system MiB | after load: cores system | RSS broker MiB | "
        "RSS system MiB |",
        "|---" * 11 + "|",
    ]
    for kind in broker_kinds(results):
        for sc in scenarios_on(results, kind):
            idle, later = _idle(sc), _idle(sc, "idle_after_load")
            if not idle:
                continue
            cores = idle.get("cores") or {}
            lines.append(
                f"| {kind} | {sc['name']} | {_fmt(cores.get('scenario'))} | "
                f"{_fmt(cores.get('broker'))} | {_fmt(idle.get('cores_system'))} | "
                f"{_fmt(idle.get('rss_mb_services'))} | {_fmt(idle.get('rss_mb_broker'))} | "
                f"{_fmt(idle.get('rss_mb_system'))} | {_fmt(later.get('cores_system'))} | "
                f"{_fmt(later.get('rss_mb_broker'))} | {_fmt(later.get('rss_mb_system'))} |"
            )
    return lines


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    kinds = broker_kinds(results)
    lines = [
        "# Benchmark results",
        "",
        f"- mode: {'quick' if meta.get('quick') else 'full'}; started {meta.get('started')}; "
        f"wall {meta.get('wall_s')} s; host: {meta.get('cpus')} CPUs, load avg "
        f"{meta.get('loadavg')}",
        *_broker_lines(results),
        f"- one fresh broker per scenario; {meta.get('partitions')} partitions per topic; 5 hops "
        "per chain; latency from intended send time (open loop).",
        f"- every scenario ran {meta.get('repeats', 1)} time(s), each on a fresh broker; the "
        "summary shows the run with the median sustained rate, the sustained table the spread. "
        "The sustained rate is the headline (bench/sustained.py); the burst ('saturation': N "
        "messages sent at once) is informational: it measures how fast a queue drains.",
        "- CPU per 1,000 messages: 'at rate' over the highest passing probe, the other column "
        "over the burst; idle cores over a quiet period after warm-up. The broker columns count "
        "the broker process (the Kafka JVM, or Tansu); broker start is from launch (Kafka: "
        "formatting its storage included) to answering metadata requests.",
        *_busy_warning(meta),
    ]
    for kind in kinds:
        lines += ["", f"## Summary: {broker_label(results, kind)}", ""]
        lines += _summary(results, kind)
    if len(kinds) > 1:
        lines += _comparison_lines(results, kinds[0], kinds[1])
    lines += [
        "",
        "s1 = raw chain, s2 = bare Faust chain (one worker per agent), s2b = bare Faust chain "
        "(one worker, five agents; full run only), s3 = Itinerant's runtime with five no-op "
        "agents (one worker each). s4, the demo flow, counts sagas (its msg/s columns are "
        "sagas/s, CPU per 1,000 sagas) and has no ratio row. A ratio "
        "above 1 means the numerator has more of that figure (throughput: better; latency, "
        "CPU, RSS: worse). Latency at 25%/50% compares each scenario at its own share of its "
        "own saturation.",
    ]
    lines += report_signing.lines(results)
    lines += _idle_lines(results)
    extras = [
        (sc.get("broker", "tansu"), sc["name"], sc["extra"])
        for sc in representatives(results)
        if sc.get("extra")
    ]
    for kind, name, extra in extras:
        lines += ["", f"### {name} on {kind}: extra measurements", "", "```", json.dumps(extra)]
        lines.append("```")
    lines += ["", "## Latency by offered load", ""]
    lines.append(
        "| broker | scenario | offered msg/s | of sat. | achieved msg/s | p50 ms | p95 ms | "
        "p99 ms | max ms | received/sent | CPU s/1k scen. | CPU s/1k broker |"
    )
    lines.append("|---" * 12 + "|")
    for sc in representatives(results):
        for ld in sc.get("loads", []):
            lat = ld["latency"]
            cpu = ld.get("cpu_s_per_1k", {})
            lines.append(
                f"| {sc.get('broker', 'tansu')} | {sc['name']} | {_fmt(ld['offered_rate'])} | "
                f"{ld['fraction_of_saturation']:.1%} | {_fmt(ld['throughput'])} | "
                f"{_fmt(lat['p50'])} | {_fmt(lat['p95'])} | {_fmt(lat['p99'])} | "
                f"{_fmt(lat['max'])} | {ld['received']}/{ld['sent']} | "
                f"{_fmt(cpu.get('scenario'))} | {_fmt(cpu.get('broker'))} |"
            )
    lines += ["", "## Peak RSS (MiB) per process", ""]
    for sc in representatives(results):
        rss = sc.get("peak_rss_mb")
        if rss:
            lines.append(
                f"- {sc['name']} on {sc.get('broker', 'tansu')}: "
                + ", ".join(f"{k} {v}" for k, v in rss.items())
            )
    for kind, curve in curves(results).items():
        if not curve:
            continue
        info = next(
            (i for i in (meta.get("brokers") or []) if i["kind"] == kind), {"fetch_wait_ms": 10}
        )
        lines += [
            "",
            f"## Broker curve: {broker_label(results, kind)} (one hop, one partition, fetch "
            f"wait {info.get('fetch_wait_ms')} ms)",
            "",
            "| stored batches | p50 ms | p95 ms | p99 ms | max ms | probes lost | fill s |",
            "|---|---|---|---|---|---|---|",
        ]
        for pt in curve:
            lat = pt["latency"]
            lines.append(
                f"| {pt['batches']} | {_fmt(lat['p50'])} | {_fmt(lat['p95'])} | "
                f"{_fmt(lat['p99'])} | {_fmt(lat['max'])} | {pt['lost']} | "
                f"{_fmt(pt.get('fill_s'))} |"
            )
    for kind, err in (results.get("broker_curve_errors") or {}).items():
        lines += ["", f"Broker curve on {kind} failed: {err}"]
    lines.append("")
    return "\n".join(lines)


def curves(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Broker curve points by broker kind (older results: one Tansu curve)."""
    if results.get("broker_curves") is not None:
        return dict(results["broker_curves"])
    old = results.get("broker_curve") or []
    return {"tansu": old} if old else {}


def plot_latency(results: dict[str, Any], path: Path) -> bool:
    """Plot p50/p99 against offered load; False (nothing written) when no load was measured."""
    if not any(sc.get("loads") for sc in results.get("scenarios", [])):
        return False
    several = len(broker_kinds(results)) > 1
    fig, ax = plt.subplots(figsize=(8, 5))
    for sc in representatives(results):
        loads = sorted(sc.get("loads", []), key=lambda d: d["offered_rate"])
        if not loads:
            continue
        title = f"{sc['title']} [{sc.get('broker', 'tansu')}]" if several else sc["title"]
        x = [d["offered_rate"] for d in loads]
        (line,) = ax.plot(x, [d["latency"]["p50"] for d in loads], marker="o", label=f"{title} p50")
        ax.plot(
            x,
            [d["latency"]["p99"] for d in loads],
            marker="x",
            linestyle="--",
            color=line.get_color(),
            label=f"{title} p99",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (msg/s, open loop)")
    ax.set_ylabel("end-to-end latency, 5 hops (ms)")
    ax.set_title(
        "Latency vs offered load on "
        + ", ".join(broker_label(results, k) for k in broker_kinds(results))
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6 if several else 7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_curve(results: dict[str, Any], path: Path) -> None:
    by_kind = {kind: curve for kind, curve in curves(results).items() if curve}
    if not by_kind:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for kind, curve in by_kind.items():
        x = [p["batches"] for p in curve]
        for q, style in (("p50", "-o"), ("p99", "--x")):
            ax.plot(
                x,
                [p["latency"][q] for p in curve],
                style,
                label=f"{broker_label(results, kind)} {q}",
            )
    ax.set_xlabel("record batches stored in the partition")
    ax.set_ylabel("one-hop transit (ms)")
    ax.set_title("One-hop transit vs stored batches")
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
    results["sustained_spread"] = {
        kind: {
            name: report_sustained.spread(runs)
            for name, runs in report_sustained.runs_by_name(all_runs_on(results, kind)).items()
        }
        for kind in broker_kinds(results)
    }
    results["ratios"] = {
        kind: ratios(scenarios_on(results, kind)) for kind in broker_kinds(results)
    }
    results["signature_pairs"] = report_signing.pairs(results)
    paths = [outdir / f"{stem}.json", outdir / f"{stem}.md"]
    paths[0].write_text(json.dumps(results, indent=2, default=str) + "\n")
    paths[1].write_text(markdown(results))
    lat_png, curve_png = outdir / f"{stem}_latency.png", outdir / f"{stem}_broker_curve.png"
    if plot_latency(results, lat_png):
        paths.append(lat_png)
    if any(curves(results).values()):
        plot_curve(results, curve_png)
        paths.append(curve_png)
    for kind in broker_kinds(results):
        probes_png = outdir / f"{stem}_sustained_{kind}.png"
        if report_sustained.plot(
            all_runs_on(results, kind), probes_png, broker_label(results, kind)
        ):
            paths.append(probes_png)
    return paths
