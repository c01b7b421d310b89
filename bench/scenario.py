"""The scenario interface every benchmark scenario implements.

A scenario is a set of OS processes that consume the entry topic and eventually write every
message (headers passed through) to the exit topic. The harness owns the broker (a fresh one per
run, Apache Kafka or Tansu: ``bench.brokers``), the topics, load generation, the sink and all
measurements; a scenario only starts and stops its processes.

To add a scenario (e.g. Itinerant's own runtime) write a module with a class satisfying
:class:`Scenario` and a function ``scenarios(quick: bool) -> list[Scenario]``, then run
``python -m bench.run --extra your.module`` (or call ``bench.run.main(extra=[...])``).
Set ``slot = "s3"`` to fill the "scenario 3 / scenario 2" ratio column of the report.

Optional members a scenario may define (the harness uses them when present):

- ``codec``: a :class:`bench.loadgen.Codec` when messages cannot carry the baseline's
  ``bench-*`` headers end to end (Itinerant regenerates headers; the time rides in the payload);
- ``unit``: what one message is ("msg", "saga"), for the report;
- ``configure(cfg) -> cfg``: per-scenario changes of the run's :class:`bench.harness.BenchConfig`
  (e.g. fewer, longer phases for a slow end-to-end flow);
- ``broker``: the harness sets it to the kind of broker the scenario runs on (``"kafka"`` or
  ``"tansu"``) before ``topics`` and ``start``, for processes that tune themselves by it (the
  consumer fetch wait: ``bench.brokers.fetch_wait_ms``; the runtime's ``Settings.broker``);
- ``after(ctx) -> dict``: extra measurements after the load phases, with the harness's producer,
  sink and topics (``bench.harness.PhaseContext``); the dict lands in the results as ``extra``.
- ``signing`` (``"required"`` or ``"off"``), ``pair``, ``hops`` and ``compare_rate``: a scenario
  run twice, with message signatures on and off, names the pair both runs belong to (``"s3"``),
  the hops one unit makes (for per-hop figures) and the offered rate both runs are compared at;
  the harness copies them into the results and the report puts the two side by side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ChainTopics:
    """Topics of one scenario, in flow order: ``names[0]`` is the entry, ``names[-1]`` the exit.

    The harness creates all of them (explicitly, with ``partitions``) before ``start``.
    """

    names: tuple[str, ...]
    partitions: int
    extra: tuple[str, ...] = ()  # topics the scenario needs that are neither entry nor exit path

    @property
    def all(self) -> tuple[str, ...]:
        return (*self.names, *self.extra)

    @property
    def entry(self) -> str:
        return self.names[0]

    @property
    def exit(self) -> str:
        return self.names[-1]

    @classmethod
    def chain(cls, prefix: str, hops: int, partitions: int) -> ChainTopics:
        """``hops`` processing steps need ``hops + 1`` topics: t0 -> hop1 -> t1 ... -> t<hops>."""
        return cls(tuple(f"{prefix}.t{i}" for i in range(hops + 1)), partitions)


@runtime_checkable
class Scenario(Protocol):
    name: str  # stable key in results (json), e.g. "raw_chain"
    title: str  # human label for tables and plots
    slot: str | None  # "s1" | "s2" | "s2b" | "s3" | None: which ratio row it feeds
    ready_timeout_s: float  # how long the harness waits for the first end-to-end delivery

    def topics(self, prefix: str, partitions: int) -> ChainTopics:
        """Names (under ``prefix``, unique per run) of every topic the scenario needs."""
        ...

    def start(self, bootstrap: str, topics: ChainTopics, workdir: Path) -> None:
        """Start the processes (non-blocking). ``workdir`` is a scratch dir for logs/data."""
        ...

    def processes(self) -> dict[str, int]:
        """Label -> pid of every process to account CPU/RSS for (children are included)."""
        ...

    def stop(self) -> None:
        """Stop every process the scenario started; must be idempotent."""
        ...


class ProcessSet:
    """Helper for scenarios made of subprocesses: start, list, stop (TERM, then KILL)."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[object] = []

    def spawn(
        self, label: str, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        """Start ``python args...`` with the bench's environment plus ``env``."""
        fh = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self._logs.append(fh)
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.procs[label] = subprocess.Popen(
            [sys.executable, *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=str(log.parent),
            env=env,
        )

    def pids(self) -> dict[str, int]:
        return {label: p.pid for label, p in self.procs.items()}

    def check_alive(self) -> None:
        dead = {k: p.returncode for k, p in self.procs.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"scenario processes exited: {dead}")

    def stop(self, grace_s: float = 8.0) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        for fh in self._logs:
            fh.close()  # type: ignore[attr-defined]
        self._logs.clear()
