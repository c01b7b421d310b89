"""The saga state machine, pure: state in, event in, new state and commands out.

    running -> completed
    running -> parked -> running                      (dead-lettered step, then replayed)
    running -> awaiting_approval -> running           (approval gate: a human approved)
    running | parked | awaiting_approval -> compensating -> compensated
                          (business failure, timeout, budget, discard, approval rejected/expired)
    compensating -> failed                            (a compensation could not finish)
    rejected                                          (ingress refused the request)

This module is the machine's public face, one import for the coordinator and tests (see
docs/architecture.md#the-saga-coordinator). The parts, one job each:

- :mod:`.saga_model`: the saga document and the small changes every transition makes;
- :mod:`.saga_commands`: what a transition asks the coordinator to do;
- :mod:`.saga_events`: the start, and the transitions on progress events;
- :mod:`.saga_groups`: parallel groups, gathered and joined;
- :mod:`.saga_approvals`: the approval gate;
- :mod:`.saga_compensation`: undoing completed side effects;
- :mod:`.saga_timers`: deadlines and timeouts.
"""

from __future__ import annotations

from .saga_approvals import on_approval_request, on_decision
from .saga_commands import Command, Compensate, Dispatch, Finish
from .saga_compensation import begin_compensation
from .saga_events import on_event, start
from .saga_groups import merge_budgets, merge_outputs
from .saga_model import (
    TERMINAL,
    ApprovalHold,
    BranchResult,
    GroupState,
    Saga,
    SagaState,
    StepKey,
    StepRecord,
    StepStatus,
    TimelineEntry,
)
from .saga_timers import on_tick

__all__ = [
    "TERMINAL",
    "ApprovalHold",
    "BranchResult",
    "Command",
    "Compensate",
    "Dispatch",
    "Finish",
    "GroupState",
    "Saga",
    "SagaState",
    "StepKey",
    "StepRecord",
    "StepStatus",
    "TimelineEntry",
    "begin_compensation",
    "merge_budgets",
    "merge_outputs",
    "on_approval_request",
    "on_decision",
    "on_event",
    "on_tick",
    "start",
]
