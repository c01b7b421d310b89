"""The report's section on message signatures: the micro-benchmark (``bench.signing``) and the
scenarios run twice, signatures required and off, side by side per hop."""

from __future__ import annotations

import math
from typing import Any

from bench import signing

#: Processes of a scenario that are not agents (their CPU is shown apart).
NOT_AGENTS = ("coordinator", "gateway")


def _num(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or not b or (isinstance(a, float) and math.isnan(a)):
        return None
    return a / b


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.3g}")


def per_hop(sc: dict[str, Any]) -> dict[str, Any]:
    """The per-hop figures of one run: end-to-end latency at the pair's offered rate, divided
    by the hops a unit makes, and CPU per unit per hop over the saturation run."""
    hops = sc.get("hops") or 1
    rate = sc.get("compare_rate")
    load = next((ld for ld in sc.get("loads", []) if ld.get("offered_rate") == rate), None)
    lat = (load or {}).get("latency") or {}
    sat = sc.get("saturation") or {}
    received = sat.get("received") or 0
    by_process = sc.get("cpu_s_by_process_saturation") or {}
    agents_s = sum(v for k, v in by_process.items() if k not in NOT_AGENTS)
    apart_s = {k: v for k, v in by_process.items() if k in NOT_AGENTS}
    cpu_ms = (sc.get("cpu_s_per_1k_saturation") or {}).get("scenario")  # ms per unit, all
    # The services burn CPU idle too (consumer polls, timers): take the idle cores measured
    # before and after the load, times the saturation run's duration, off the total.
    idle = [
        (sc.get(key) or {}).get("cores", {}).get("scenario") for key in ("idle", "idle_after_load")
    ]
    idle_cores = [c for c in idle if c is not None]
    net_ms = None
    if cpu_ms is not None and idle_cores and received:
        idle_s = sum(idle_cores) / len(idle_cores) * (sat.get("duration_s") or 0.0)
        net_ms = max(0.0, cpu_ms - idle_s * 1000.0 / received)
    return {
        "signing": sc.get("signing"),
        "hops": hops,
        "rate": rate,
        "saturation": sat.get("throughput"),
        "p50_ms": lat.get("p50"),
        "p99_ms": lat.get("p99"),
        "hop_p50_ms": _round(_div(lat.get("p50"), hops)),
        "hop_p99_ms": _round(_div(lat.get("p99"), hops)),
        "cpu_ms_per_unit": cpu_ms,
        "cpu_ms_per_hop": _round(_div(cpu_ms, hops)),
        "cpu_ms_per_hop_net_of_idle": _round(_div(net_ms, hops)),
        "agent_cpu_ms_per_hop": _round(_div(agents_s * 1000.0, received * hops))
        if by_process
        else _round(_div(cpu_ms, hops)),
        "other_cpu_ms_per_unit": {
            k: _round(_div(v * 1000.0, received)) for k, v in apart_s.items()
        },
    }


def _diff(on: dict[str, Any], off: dict[str, Any], key: str) -> float | None:
    a, b = on.get(key), off.get(key)
    return None if a is None or b is None else _round(a - b)


def pairs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each on/off pair that ran (per broker): both runs' per-hop figures and on/off ratios."""
    found: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for sc in results.get("scenarios", []):
        if sc.get("pair") and sc.get("signing") and "error" not in sc:
            key = (sc.get("broker", "kafka"), sc["pair"])
            found.setdefault(key, {})[sc["signing"]] = sc
    out = []
    for (broker, pair), runs in found.items():
        if "required" not in runs or "off" not in runs:
            continue
        on, off = per_hop(runs["required"]), per_hop(runs["off"])
        ratio = {
            k: _round(_div(on[k], off[k]))
            for k in (
                "saturation",
                "p50_ms",
                "p99_ms",
                "cpu_ms_per_hop",
                "cpu_ms_per_hop_net_of_idle",
                "agent_cpu_ms_per_hop",
            )
        }
        out.append(
            {
                "broker": broker,
                "pair": pair,
                "title": runs["required"]["title"],
                "unit": runs["required"].get("unit", "msg"),
                "on": on,
                "off": off,
                "ratio_on_off": ratio,
                "cpu_ms_per_hop_added": _diff(on, off, "cpu_ms_per_hop"),
                "cpu_ms_per_hop_added_net_of_idle": _diff(on, off, "cpu_ms_per_hop_net_of_idle"),
            }
        )
    return out


def micro_estimate(micro: dict[str, Any]) -> float | None:
    """µs a no-op hop spends in signatures by the micro-benchmark: it verifies its sender and
    signs three times (its visit, the progress event, the next message)."""
    cases = micro.get("cases") or {}
    verify, sign = cases.get("verify 200 B"), cases.get("sign 200 B")
    if not verify or not sign:
        return None
    return round(float(verify["median_us"]) + 3 * float(sign["median_us"]), 1)


def lines(results: dict[str, Any]) -> list[str]:
    """The section, in Markdown (empty when neither part ran)."""
    micro = results.get("signing")
    found = pairs(results)
    if not micro and not found:
        return []
    out = ["", "## Message signatures: cost per message and per hop", ""]
    if micro:
        out += [
            "Micro-benchmark (`python -m bench.signing`, in process, no broker): each case "
            f"timed call by call, {micro['rounds']} interleaved rounds of {micro['per_round']} "
            f"calls (load average {micro['loadavg']} on {micro['cpus']} CPUs at its end). "
            f"`sign`/`verify` messages carry a slip of {micro['slip_visits']} visits; `visits xN` "
            "checks a chain of N signed visits. The baseline is a bare Ed25519 verify (and sign) "
            "of a message digest in the same run.",
            "",
            *signing.table(micro),
        ]
        estimate = micro_estimate(micro)
        if estimate is not None:
            out += [
                "",
                f"A no-op hop verifies its sender and signs three times (visit, progress event, "
                f"next message): about **{estimate} µs** of CPU per hop by these figures.",
            ]
    if found:
        out += [
            "",
            "The same scenario with signatures required and off "
            "(`ITINERANT_MESSAGE_SIGNING=off` in every service's environment), each on its own "
            "fresh broker. Latency is end to end at the offered rate both runs share (per hop: "
            "divided by the hops a unit makes); CPU is the services' process time over the "
            "saturation run divided by the units delivered and the hops (all services; net of "
            "the idle cores measured before and after the load; the agents alone; the "
            "coordinator per unit, apart).",
            "",
            "| broker | scenario | signatures | hops | sat. units/s | offered units/s | p50 ms | "
            "p99 ms | per-hop p50 ms | per-hop p99 ms | CPU ms/hop | CPU ms/hop net of idle | "
            "agent CPU ms/hop | coordinator CPU ms/unit |",
            "|---" * 14 + "|",
        ]
        for p in found:
            for label, row in (("required", p["on"]), ("off", p["off"])):
                coord = row["other_cpu_ms_per_unit"].get("coordinator")
                out.append(
                    f"| {p['broker']} | {p['pair']} ({p['unit']}) | {label} | {row['hops']} | "
                    f"{_num(row['saturation'])} | {_num(row['rate'])} | {_num(row['p50_ms'])} | "
                    f"{_num(row['p99_ms'])} | {_num(row['hop_p50_ms'])} | "
                    f"{_num(row['hop_p99_ms'])} | {_num(row['cpu_ms_per_hop'])} | "
                    f"{_num(row['cpu_ms_per_hop_net_of_idle'])} | "
                    f"{_num(row['agent_cpu_ms_per_hop'])} | {_num(coord)} |"
                )
            r = p["ratio_on_off"]
            out.append(
                f"| {p['broker']} | {p['pair']} | **on/off** | | {_num(r['saturation'])} | | "
                f"{_num(r['p50_ms'])} | {_num(r['p99_ms'])} | | | "
                f"{_num(r['cpu_ms_per_hop'])} | {_num(r['cpu_ms_per_hop_net_of_idle'])} | "
                f"{_num(r['agent_cpu_ms_per_hop'])} | |"
            )
        out += [
            "",
            "Signatures add, per hop (on minus off), "
            + "; ".join(
                f"{_num(p['cpu_ms_per_hop_added'])} ms of CPU "
                f"({_num(p['cpu_ms_per_hop_added_net_of_idle'])} ms net of idle) in "
                f"{p['pair']} on {p['broker']}"
                for p in found
            )
            + ". Few messages and a shared host make these differences noisy; the "
            "micro-benchmark's figure is the steadier one.",
        ]
    return out
