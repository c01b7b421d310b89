"""Scenario 2: a five-agent chain of bare faust-streaming agents (no Itinerant runtime).

Two layouts: ``FaustChain(layout="procs")`` runs one worker process per agent (each its own
app/consumer group), ``FaustChain(layout="single")`` hosts all five agents in one worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from bench.brokers import fetch_wait_ms
from bench.scenario import ChainTopics, ProcessSet


class FaustChain:
    slot: str | None
    ready_timeout_s = 45.0
    broker = "kafka"  # set by the harness; the workers' fetch wait follows it

    def __init__(self, layout: Literal["procs", "single"] = "procs", hops: int = 5) -> None:
        self.layout = layout
        self.hops = hops
        if layout == "procs":
            self.name = "faust_chain"
            self.title = "S2 bare Faust chain (5 workers)"
            self.slot = "s2"
        else:
            self.name = "faust_chain_1proc"
            self.title = "S2b bare Faust chain (1 worker, 5 agents)"
            self.slot = "s2b"
        self._procs = ProcessSet()

    def topics(self, prefix: str, partitions: int) -> ChainTopics:
        return ChainTopics.chain(prefix, self.hops, partitions)

    def start(self, bootstrap: str, topics: ChainTopics, workdir: Path) -> None:
        csv = ",".join(topics.names)
        spans = (
            [(i, i) for i in range(1, self.hops + 1)]
            if self.layout == "procs"
            else [(1, self.hops)]
        )
        for first, last in spans:
            label = f"agent{first}" if first == last else f"agents{first}-{last}"
            app_id = f"{topics.entry}.{label}"
            datadir = workdir / f"faust-{label}"
            self._procs.spawn(
                label,
                [
                    "-m",
                    "bench.faust_worker",
                    bootstrap,
                    app_id,
                    str(datadir),
                    str(first),
                    str(last),
                    csv,
                    str(fetch_wait_ms(self.broker)),
                ],
                workdir / f"faust_{label}.log",
            )

    def processes(self) -> dict[str, int]:
        self._procs.check_alive()
        return self._procs.pids()

    def stop(self) -> None:
        self._procs.stop(grace_s=10.0)
