"""When `itinerant up` restarts a service that exited, and when it stops trying
(docs/operations.md#supervision): backoff that grows with consecutive fast failures, is forgotten
after a healthy run, and gives up after too many fast failures in a row."""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class RestartPolicy:
    """One service's restarts. ``healthy_after_s``: a run at least this long resets the count;
    ``give_up_after``: this many fast failures in a row and the service is not restarted."""

    healthy_after_s: float = 60.0
    give_up_after: int = 5
    backoff_s: tuple[float, ...] = BACKOFF_S
    failures: int = 0

    def exited(self, uptime_s: float) -> None:
        """Count an exit after ``uptime_s`` seconds of running."""
        self.failures = 1 if uptime_s >= self.healthy_after_s else self.failures + 1

    @property
    def given_up(self) -> bool:
        return self.failures >= self.give_up_after

    @property
    def delay_s(self) -> float:
        """How long to wait after the last exit before starting again."""
        if self.failures == 0:
            return 0.0
        return self.backoff_s[min(self.failures - 1, len(self.backoff_s) - 1)]
