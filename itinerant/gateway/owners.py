"""Which principal owns which task (docs/security-gateway.md#what-callers-see).

The gateway remembers the tasks it published (task id -> principal, context id), so a task is
its caller's before the coordinator has taken it; after that the saga's ``customer`` (what the
gateway signed in ``ce_customer``, kept by the coordinator) says whose it is, across gateway
restarts. Operators see every task. A task a caller may not see is, to that caller, a task that
does not exist.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

from itinerant.security.tokens import Principal

KEPT = 10_000
_TASK_NS = uuid.UUID("0b6c2f1e-7d3a-4c55-8e2b-a2a0a2a0a2a1")


def task_id_for(principal: str, request_id: str) -> str:
    """The task (saga) id of a client's ``request_id``: the same for the same caller and id (a
    retry finds its task), never another caller's."""
    return str(uuid.uuid5(_TASK_NS, f"{principal}/{request_id}"))


class Owners:
    """Tasks this gateway published: task id -> (principal, context id, when), the newest
    ``kept``."""

    def __init__(self, kept: int = KEPT) -> None:
        self.kept = kept
        self._tasks: OrderedDict[str, tuple[str, str, float]] = OrderedDict()

    def remember(self, task_id: str, principal: str, context_id: str) -> None:
        self._tasks[task_id] = (principal, context_id, time.monotonic())
        self._tasks.move_to_end(task_id)
        while len(self._tasks) > self.kept:
            self._tasks.popitem(last=False)

    def published(self, task_id: str) -> bool:
        return task_id in self._tasks

    def owner(self, task_id: str) -> str | None:
        found = self._tasks.get(task_id)
        return found[0] if found else None

    def newest(self) -> list[str]:
        """The tasks published, newest first."""
        return list(reversed(self._tasks))

    def context_id(self, task_id: str) -> str:
        found = self._tasks.get(task_id)
        return found[1] if found else task_id


def may_see(
    principal: Principal,
    owners: Owners,
    task_id: str,
    saga: dict[str, Any] | None,
    result: dict[str, Any] | None,
) -> bool:
    """Whether ``principal`` may see (and cancel) the task."""
    if principal.operator:
        return True
    known = owners.owner(task_id)
    if known is not None:
        return known == principal.name
    customer = (saga or {}).get("customer") or (result or {}).get("customer")
    return customer == principal.name
