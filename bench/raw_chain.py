"""Scenario 1: a five-hop chain of plain confluent-kafka consume->produce processes."""

from __future__ import annotations

from pathlib import Path

from bench.brokers import fetch_wait_ms
from bench.scenario import ChainTopics, ProcessSet


class RawChain:
    """Five separate OS processes; hop i consumes ``t{i-1}`` and produces to ``t{i}``."""

    name = "raw_chain"
    title = "S1 raw confluent-kafka chain (5 procs)"
    slot: str | None = "s1"
    ready_timeout_s = 30.0
    broker = "kafka"  # set by the harness; the hops' fetch wait follows it

    def __init__(self, hops: int = 5) -> None:
        self.hops = hops
        self._procs = ProcessSet()

    def topics(self, prefix: str, partitions: int) -> ChainTopics:
        return ChainTopics.chain(prefix, self.hops, partitions)

    def start(self, bootstrap: str, topics: ChainTopics, workdir: Path) -> None:
        for i in range(1, self.hops + 1):
            src, dst = topics.names[i - 1], topics.names[i]
            self._procs.spawn(
                f"hop{i}",
                [
                    "-m",
                    "bench.raw_hop",
                    bootstrap,
                    src,
                    dst,
                    f"{topics.entry}.g{i}",
                    str(fetch_wait_ms(self.broker)),
                ],
                workdir / f"raw_hop{i}.log",
            )

    def processes(self) -> dict[str, int]:
        self._procs.check_alive()
        return self._procs.pids()

    def stop(self) -> None:
        self._procs.stop()
