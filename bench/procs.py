"""Per-process resource accounting with psutil: CPU seconds, idle CPU, peak RSS."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return [root]


def cpu_seconds(pid: int, tree: bool = True) -> float:
    """User+system CPU seconds of a process (and, if ``tree``, its live descendants)."""
    total = 0.0
    procs = _tree(pid) if tree else _tree(pid)[:1]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = proc.cpu_times()
            total += t.user + t.system
    return total


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) in MiB; falls back to the current RSS."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    with contextlib.suppress(psutil.NoSuchProcess):
        return float(psutil.Process(pid).memory_info().rss) / (1024.0 * 1024.0)
    return 0.0


def rss_mb(pid: int) -> float:
    """Current resident set size in MiB (0 if the process is gone)."""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        return float(psutil.Process(pid).memory_info().rss) / (1024.0 * 1024.0)
    return 0.0


@dataclass
class ProcGroup:
    """Named processes of one scenario, split by role for reporting.

    ``roles`` maps a role (``scenario``, ``broker``, ``loadgen``) to labelled pids.
    """

    roles: dict[str, dict[str, int]] = field(default_factory=dict)
    no_tree: set[int] = field(default_factory=set)

    def add(self, role: str, label: str, pid: int, tree: bool = True) -> None:
        """Track ``pid`` (with its descendants unless ``tree`` is false) under ``role``."""
        self.roles.setdefault(role, {})[label] = pid
        if not tree:
            self.no_tree.add(pid)

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far per role."""
        return {
            role: sum(cpu_seconds(pid, pid not in self.no_tree) for pid in pids.values())
            for role, pids in self.roles.items()
        }

    def cpu_by_process(self, role: str) -> dict[str, float]:
        """CPU seconds so far of each labelled process of ``role``."""
        return {
            label: cpu_seconds(pid, pid not in self.no_tree)
            for label, pid in self.roles.get(role, {}).items()
        }

    def peak_rss(self) -> dict[str, float]:
        """Peak RSS in MiB per labelled process (``role/label``)."""
        return {
            f"{role}/{label}": round(peak_rss_mb(pid), 1)
            for role, pids in self.roles.items()
            for label, pid in pids.items()
        }

    def idle_cpu(self, seconds: float) -> dict[str, float]:
        """Average cores used per role while nothing is sent, over ``seconds``."""
        before = self.cpu()
        t0 = time.monotonic()
        time.sleep(seconds)
        after = self.cpu()
        wall = time.monotonic() - t0
        return {role: round((after[role] - before[role]) / wall, 4) for role in after}


def self_pid() -> int:
    return os.getpid()
