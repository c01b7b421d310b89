"""Scenario 3: five no-op agents through Itinerant's full runtime, one process each.

Messages enter at agent 1's topic as CloudEvents with a five-step routing slip and a budget, and
leave as the last agent's final ``step_completed`` event on ``saga.events`` (StepEvent JSON, whose
``output`` is the payload). The runtime regenerates headers at every hop, so the run id and the
intended send time ride in the payload. The no-op steps have no side effects, so only the last
sends a progress event (docs/architecture.md#progress-events); the codec skips any other.
Inbox, slip, budgets, tracing (JSON-lines file) and metrics
(HTTP endpoints on a free port block) are all on, as ``itinerant up`` runs them.

Message signatures are required, as in ``itinerant up``: the scenario generates the mesh's keys
in its data folder, the load generator signs every entry message as the coordinator (which is
who sends to a first agent), and each agent verifies its sender and signs its visit, its
progress event and the next message. ``ItinerantNoop(signing="off")`` runs the same chain with
``ITINERANT_MESSAGE_SIGNING=off`` in the workers' environment, for the on/off comparison.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.brokers import PORT_RANGE
from bench.harness import BenchConfig
from bench.loadgen import Encoded
from bench.scenario import ChainTopics, ProcessSet
from itinerant.security.keys import ensure_local_keys, keys_dir
from itinerant.security.signing import MeshKeys
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import OutMessage
from itinerant.wire.slip import Slip, Step

NAMES = ("noop1", "noop2", "noop3", "noop4", "noop5")
_FINAL = b'"final":true'
_PAD = "x" * 160  # about the size of the baseline's 200-byte payload once JSON-encoded
#: Who the entry messages come from: the coordinator sends a saga's first step.
SENDER = "coordinator"


def free_block(n: int, taken: set[int] | None = None) -> int:
    """Base of ``n`` consecutive free ports, from the top of the benchmark range down."""
    taken = taken or set()
    top = PORT_RANGE.stop - 1
    for base in range(top - n + 1, PORT_RANGE.start, -1):
        block = range(base, base + n)
        if any(p in taken for p in block):
            continue
        ok = True
        for port in block:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {n} consecutive free ports in the benchmark range")


class SlipCodec:
    """Entry: CloudEvents headers with a 5-step slip, signed as the coordinator once ``keys``
    is set; exit: the final StepEvent's output."""

    def __init__(self, names: tuple[str, ...] = NAMES) -> None:
        slip = Slip(steps=[Step(agent=n) for n in names])
        budget = Budget(max_hops=20, deadline=datetime.now(UTC) + timedelta(days=1))
        self.keys: MeshKeys | None = None
        self._static = [
            ("ce_specversion", b"1.0"),
            ("ce_source", f"/itinerant/{SENDER}".encode()),
            ("ce_type", f"itinerant.{names[0]}.run.v1".encode()),
            ("ce_time", datetime.now(UTC).isoformat().encode()),
            ("content-type", b"application/json"),
        ]
        self._tail = [("ce_routingslip", slip.encode(8192)), ("ce_budget", budget.encode())]

    def encode(self, run: str, seq: int, intended_ns: int) -> Encoded:
        saga = f"{run}-{seq}".encode()
        value = json.dumps({"bench_run": run, "bench_t": intended_ns, "pad": _PAD}).encode()
        headers = [*self._static, ("ce_id", saga), ("ce_sagaid", saga), *self._tail]
        if self.keys is not None:
            headers = list(self.keys.sign(OutMessage("", saga, value, headers), SENDER).headers)
        return saga, value, headers

    def decode(self, msg: Any) -> tuple[str, int] | None:
        value = msg.value()
        if not value or _FINAL not in value:
            return None
        event = json.loads(value)
        if not event.get("final") or event.get("kind") != "step_completed":
            return None
        out = event.get("output") or {}
        return str(out["bench_run"]), int(out["bench_t"])


class ItinerantNoop:
    unit = "msg"
    ready_timeout_s = 60.0
    broker = "kafka"  # set by the harness; the runtime tunes itself for it
    pair = "s3"  # the signatures on/off pair (bench.report)
    compare_rate = 10.0  # msg/s both halves of the pair run at, well under saturation

    def __init__(self, names: tuple[str, ...] = NAMES, signing: str = "required") -> None:
        self.names = names
        self.hops = len(names)
        self.signing = signing
        if signing == "required":
            self.name = "itinerant_noop"
            self.title = "S3 Itinerant runtime, 5 no-op agents (5 workers)"
            self.slot: str | None = "s3"
        else:
            self.name = "itinerant_noop_unsigned"
            self.title = "S3 Itinerant runtime, 5 no-op agents (5 workers), signatures off"
            self.slot = None
        self.codec = SlipCodec(names)
        self._procs = ProcessSet()
        self.prefix = ""

    def configure(self, cfg: BenchConfig) -> BenchConfig:
        # Two acknowledged sends per hop make this chain slow (tens of msg/s): a small pilot
        # keeps the saturation runs at a few seconds instead of the baseline's 1,000+ messages.
        lo, hi = cfg.saturation_bounds
        pilot = 150 if cfg.quick else 300
        return dataclasses.replace(
            cfg,
            saturation_pilot=pilot,
            saturation_bounds=(min(lo, pilot), hi),
            fixed_loads=(*cfg.fixed_loads, self.compare_rate),
        )

    def topics(self, prefix: str, partitions: int) -> ChainTopics:
        self.prefix = f"{prefix}."
        agent_topics = tuple(f"{self.prefix}agent.{n}" for n in self.names)
        return ChainTopics(
            (*agent_topics, f"{self.prefix}saga.events"),
            partitions,
            extra=(f"{self.prefix}dlq",),
        )

    def start(self, bootstrap: str, topics: ChainTopics, workdir: Path) -> None:
        data_dir = workdir / f"data-{self.prefix.strip('.')}"
        if self.signing == "required":  # as `itinerant up` would: every principal's key
            keys = Settings(data_dir=data_dir, message_signing="required")
            ensure_local_keys(keys_dir(keys), [*self.names, SENDER])
            self.codec.keys = MeshKeys(keys)
        # Metrics on, as in `itinerant up`: service i serves base+i (index 0 is the coordinator).
        metrics_base = free_block(len(self.names) + 1)
        for name in self.names:
            self._procs.spawn(
                name,
                [
                    "-m",
                    "bench.itinerant_agent",
                    bootstrap,
                    self.prefix,
                    str(data_dir),
                    str(topics.partitions),
                    str(metrics_base),
                    name,
                    ",".join(self.names),
                    self.broker,
                ],
                workdir / f"{self.name}_{name}.log",  # each run of the pair its own logs
                env={"ITINERANT_MESSAGE_SIGNING": self.signing},
            )

    def processes(self) -> dict[str, int]:
        self._procs.check_alive()
        return self._procs.pids()

    def stop(self) -> None:
        self._procs.stop(grace_s=10.0)


def scenarios(quick: bool) -> list[Any]:
    return [ItinerantNoop(), ItinerantNoop(signing="off")]
