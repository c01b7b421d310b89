"""Profile scenario 3's hot path: where one no-op hop of Itinerant's runtime spends its CPU.

``python -m bench.profile_noop [--rate 30] [--seconds 20] [--agent noop3] [--mode pyspy|cprofile]
[--broker kafka|tansu]``

Starts a fresh broker (the embedded Apache Kafka unless ``--broker tansu``) and the five no-op
agents of scenario 3, warms up, then offers an
open-loop load while sampling one middle agent with py-spy (``pip install py-spy``; sampling, low
overhead, all threads) or, with ``--mode cprofile``, running every agent under cProfile
(``BENCH_PROFILE``; main thread only, adds overhead). It writes
``bench/results/profile_noop.{md,json}`` (and the raw stacks) with the CPU share of each
category of work, and milliseconds of CPU per message for each.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.brokers import KINDS, fetch_wait_ms, make_broker
from bench.itinerant_noop import ItinerantNoop
from bench.loadgen import Sink, make_producer, open_loop, warm_up
from bench.procs import cpu_seconds
from bench.report import RESULTS_DIR

# (category, test on one frame "func (file:line)"); the first category matching any frame of a
# stack, scanning from the leaf up, gets the sample: the most specific cost wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("logging", ("logging/__init__.py", "/logging/")),
    ("metrics (prometheus_client)", ("prometheus_client",)),
    ("tracing (opentelemetry spans)", ("opentelemetry", "observability/tracing.py")),
    ("sqlite inbox/outbox", ("runtime/store.py", "sqlite3")),
    (
        "pydantic payload/event/slip/budget (validate+dump)",
        ("pydantic", "model_dump_json", "model_validate", "model_copy"),
    ),
    ("json / base64 (outbox encoding)", ("json/", "base64")),
    ("producer (confluent produce + ack wait)", ("runtime/producer.py", "confluent_kafka")),
    ("envelope / headers", ("wire/envelope.py",)),
    (
        "signatures (Ed25519, digests)",
        ("security/signing.py", "security/keys.py", "cryptography"),
    ),
    (
        "processor logic",
        ("runtime/processor.py", "runtime/outputs.py", "runtime/attempts.py", "wire/slip.py"),
    ),
    ("uuid / ids", ("uuid.py", "wire/ids.py")),
    ("datetime", ("datetime",)),
    ("aiokafka consumer/fetch", ("aiokafka",)),
    ("faust stream/agent machinery", ("faust/", "mode/")),
    ("asyncio event loop", ("asyncio/",)),
]


IDLE_LEAVES = (
    "select (selectors.py",
    "Condition.wait (threading.py",
    "_poll (itinerant/runtime/producer.py",
)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (``comm``) of ``pid`` from /proc; same names are summed."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        key = "rdkafka threads" if name.startswith("rdk:") else name
        out[key] = out.get(key, 0.0) + cpu
    return out


def categorise(stack: list[str]) -> str:
    for frame in reversed(stack):  # leaf last in py-spy's raw format
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other"


def inclusive(stacks: Counter[str], needles: tuple[str, ...]) -> int:
    return sum(c for s, c in stacks.items() if any(n in s for n in needles))


INCLUSIVE: list[tuple[str, tuple[str, ...]]] = [
    (
        "Processor.process (whole pipeline, excl. sending)",
        ("Processor.process (itinerant/runtime/processor",),
    ),
    (
        "Worker.deliver (send + await acks + mark_sent)",
        ("Worker.deliver (itinerant/runtime/worker",),
    ),
    ("Envelope.from_record", ("from_record (itinerant/wire/envelope",)),
    ("Store.transaction/record/recorded_outputs/mark_sent", ("runtime/store.py",)),
    ("tracing.process_span + otel", ("observability/tracing.py", "opentelemetry")),
    ("prometheus metrics", ("prometheus_client",)),
    ("logging", ("logging/__init__.py",)),
    ("StepOutputs (event+forward building)", ("StepOutputs.after_step (itinerant/runtime",)),
    ("OutMessage.to_json (outbox)", ("to_json (itinerant/wire/envelope",)),
    ("AsyncProducer.send_all", ("send_all (itinerant/runtime/producer",)),
    ("BatchSpanProcessor export thread", ("export (itinerant/observability/tracing",)),
]


def parse_raw(path: Path) -> Counter[str]:
    stacks: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def summarise_pyspy(raw: Path, cpu_s: float, messages: int) -> dict[str, Any]:
    all_stacks = parse_raw(raw)
    idle = sum(
        c for st, c in all_stacks.items() if any(n in st.split(";")[-1] for n in IDLE_LEAVES)
    )
    stacks = Counter(
        {
            st: c
            for st, c in all_stacks.items()
            if not any(n in st.split(";")[-1] for n in IDLE_LEAVES)
        }
    )
    total = sum(stacks.values()) or 1
    by_cat: Counter[str] = Counter()
    for stack, count in stacks.items():
        by_cat[categorise(stack.split(";"))] += count
    ms_per_msg = cpu_s * 1000 / messages if messages else float("nan")

    def row(n: int) -> dict[str, float]:
        share = n / total
        return {"share": round(share, 4), "ms_per_msg": round(share * ms_per_msg, 3)}

    # Leaf functions (self time) across all threads.
    leaves: Counter[str] = Counter()
    for stack, count in stacks.items():
        leaves[stack.split(";")[-1]] += count
    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "cpu_s": round(cpu_s, 3),
        "messages": messages,
        "cpu_ms_per_msg": round(ms_per_msg, 3),
        "exclusive_by_category": {k: row(v) for k, v in by_cat.most_common()},
        "inclusive": {name: row(inclusive(stacks, needles)) for name, needles in INCLUSIVE},
        "top_self": [{"frame": f, **row(c)} for f, c in leaves.most_common(25)],
    }


def summarise_cprofile(prof: Path) -> dict[str, Any]:
    st = pstats.Stats(str(prof))
    total = st.total_tt  # type: ignore[attr-defined]
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append((ct, tt, nc, f"{func} ({file}:{line})"))
    rows.sort(reverse=True)
    return {
        "total_s": round(total, 3),
        "top_cumulative": [
            {"frame": f, "cum_s": round(ct, 3), "self_s": round(tt, 3), "calls": nc}
            for ct, tt, nc, f in rows[:60]
        ],
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Profile of scenario 3 (Itinerant no-op hop)",
        "",
        f"- agent sampled: {res['agent']}; offered load {res['rate']} msg/s open loop for "
        f"{res['seconds']} s; mode {res['mode']}; broker {res.get('broker', 'tansu')}",
    ]
    if "agent_cpu_ms_per_msg" in res:
        lines += [
            f"- agent CPU: {res['agent_cpu_ms_per_msg']} ms per message; idle it burns "
            f"{res['agent_idle_cores']} cores, so net of idle polling "
            f"{res['agent_cpu_ms_per_msg_net_of_idle']} ms per message",
            "- CPU per message by OS thread (ms): "
            + ", ".join(f"{k} {v}" for k, v in res["thread_cpu_ms_per_msg"].items() if v > 0),
        ]
    w = res.get("serial_wall_ms_per_call")
    if w:
        lines += [
            "",
            "## Wall time of the serial stages (concurrency=1: these add up per message)",
            "",
            "| stage | calls | ms per call |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['calls']} | {v['ms']} |" for k, v in w.items()]
        lines.append("")
    p = res.get("pyspy")
    if p:
        lines += [
            f"- py-spy (--gil: Python code holding the GIL) samples {p['samples']} "
            f"(idle waits dropped: {p['idle_samples_dropped']}); "
            f"the agent used {p['cpu_s']} CPU s for "
            f"{p['messages']} messages = **{p['cpu_ms_per_msg']} ms CPU per message per hop** "
            f"(bare Faust: ~0.2 ms)",
            "",
            "## Exclusive CPU by category (most specific frame wins)",
            "",
            "| category | share | ms/msg |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['share']:.1%} | {v['ms_per_msg']} |"
            for k, v in p["exclusive_by_category"].items()
        ]
        lines += ["", "## Inclusive (overlapping) shares", "", "| code | share | ms/msg |"]
        lines.append("|---|---|---|")
        lines += [
            f"| {k} | {v['share']:.1%} | {v['ms_per_msg']} |" for k, v in p["inclusive"].items()
        ]
        lines += ["", "## Top self-time frames", "", "| frame | share | ms/msg |", "|---|---|---|"]
        lines += [
            f"| `{r['frame']}` | {r['share']:.1%} | {r['ms_per_msg']} |" for r in p["top_self"]
        ]
    c = res.get("cprofile")
    if c:
        lines += [
            "",
            "## cProfile (main thread) top cumulative",
            "",
            "| frame | cum s | self s | calls |",
        ]
        lines.append("|---|---|---|---|")
        lines += [
            f"| `{r['frame']}` | {r['cum_s']} | {r['self_s']} | {r['calls']} |"
            for r in c["top_cumulative"][:40]
        ]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_noop", description=__doc__)
    ap.add_argument("--rate", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--agent", default="noop3")
    ap.add_argument("--mode", choices=["pyspy", "cprofile"], default="pyspy")
    ap.add_argument("--broker", choices=KINDS, default="kafka")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="itinerant-profile-"))
    sc = ItinerantNoop()
    sc.broker = args.broker
    broker = make_broker(args.broker, log_path=workdir / f"{args.broker}.log").start()
    sink = None
    result: dict[str, Any] = {
        "agent": args.agent,
        "rate": args.rate,
        "seconds": args.seconds,
        "mode": args.mode,
        "broker": args.broker,
    }
    prof_dir = workdir / "prof"
    if args.mode == "cprofile":
        os.environ["BENCH_PROFILE"] = str(prof_dir)
    timing_dir = workdir / "timing"
    os.environ["BENCH_TIMING"] = str(timing_dir)
    try:
        topics = sc.topics(f"prof.{uuid.uuid4().hex[:6]}", 3)
        broker.create_topics(topics.all, 3)
        sink = Sink(broker.bootstrap, topics.exit, 3, sc.codec, fetch_wait_ms(args.broker)).start()
        producer = make_producer(broker.bootstrap)
        sc.start(broker.bootstrap, topics, workdir)
        warm_up(producer, sink, topics.entry, sc.ready_timeout_s, codec=sc.codec)
        pid = sc.processes()[args.agent]
        spy = None
        raw = args.out / "profile_noop.raw.txt"
        if args.mode == "pyspy":
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(int(args.seconds)),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--threads",
                    "--gil",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            time.sleep(0.5)
        t_idle = time.monotonic()
        idle0 = cpu_seconds(pid, tree=False)
        time.sleep(3.0)
        idle_cores = (cpu_seconds(pid, tree=False) - idle0) / (time.monotonic() - t_idle)
        threads0 = thread_cpu(pid)
        cpu0 = cpu_seconds(pid, tree=False)
        t_load = time.monotonic()
        ph = open_loop(producer, sink, topics.entry, args.rate, args.seconds, codec=sc.codec)
        cpu1 = cpu_seconds(pid, tree=False)
        wall = time.monotonic() - t_load
        threads1 = thread_cpu(pid)
        result["load"] = ph.to_dict()
        result["agent_idle_cores"] = round(idle_cores, 4)
        result["agent_cpu_s"] = round(cpu1 - cpu0, 3)
        result["agent_cpu_ms_per_msg"] = round((cpu1 - cpu0) * 1000 / max(ph.received, 1), 3)
        result["agent_cpu_ms_per_msg_net_of_idle"] = round(
            (cpu1 - cpu0 - idle_cores * wall) * 1000 / max(ph.received, 1), 3
        )
        result["thread_cpu_ms_per_msg"] = {
            k: round((threads1.get(k, 0.0) - v) * 1000 / max(ph.received, 1), 3)
            for k, v in sorted(threads0.items(), key=lambda kv: -(threads1.get(kv[0], 0) - kv[1]))
        }
        if spy is not None:
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0:
                raise RuntimeError(f"py-spy failed: {err.decode()[-500:]}")
            result["pyspy"] = summarise_pyspy(raw, cpu1 - cpu0, ph.received)
    finally:
        sc.stop()
        if sink is not None:
            sink.stop()
        broker.stop()
    timing = timing_dir / f"{args.agent}.timing.json"
    if timing.exists():
        # Counted over the agent's whole life (warm-up included): per call averages.
        result["serial_wall_ms_per_call"] = {
            k: {"calls": v["calls"], "ms": round(v["total_s"] * 1000 / max(v["calls"], 1), 3)}
            for k, v in json.loads(timing.read_text()).items()
        }
    if args.mode == "cprofile":
        prof = prof_dir / f"{args.agent}.prof"
        if prof.exists():
            result["cprofile"] = summarise_cprofile(prof)
            shutil.copy(prof, args.out / f"profile_noop_{args.agent}.prof")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "profile_noop" if args.mode == "pyspy" else "profile_noop_cprofile"
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
