"""Is the host quiet? The CPU other work used while the benchmark ran.

The load average cannot tell: the benchmark itself keeps both cores busy. So the run reads the
host's busy CPU time (``/proc/stat``) and its own (this process and every child it waited for:
brokers, scenario processes) at the start and the end; what is left over is other work's, as
cores on average over the run. Above ``BUSY_CORES`` the report says, loudly, that the figures are
understated.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

BUSY_CORES = 0.25


def _host_busy_s() -> float:
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        total += ru.ru_utime + ru.ru_stime
    return total


@dataclass
class HostMonitor:
    t0: float = 0.0
    busy0: float = 0.0
    own0: float = 0.0

    def start(self) -> HostMonitor:
        self.t0, self.busy0, self.own0 = time.monotonic(), _host_busy_s(), _own_cpu_s()
        return self

    def other_cores(self) -> float:
        """Cores used on average since ``start`` by everything but this run (never below 0)."""
        wall = time.monotonic() - self.t0
        if wall <= 0:
            return 0.0
        other = (_host_busy_s() - self.busy0) - (_own_cpu_s() - self.own0)
        return round(max(0.0, other / wall), 3)
