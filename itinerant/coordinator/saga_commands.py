"""What a saga transition asks the coordinator to do: compensate a step, dispatch, finish.

Transitions are pure and return these; the coordinator turns them into messages in the same
transaction as the saga change (:mod:`itinerant.coordinator.messages`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from itinerant.wire.budget import Budget
from itinerant.wire.slip import Slip

from .saga_model import StepRecord


@dataclass(frozen=True)
class Compensate:
    step: StepRecord
    reason: str


@dataclass(frozen=True)
class Dispatch:
    """Send the merged output of a joined group (or a released approval) to the step after it."""

    group: int
    slip: Slip
    budget: Budget | None
    output: dict[str, Any]
    label: str = ""  # names the forward's derived id (default: join:<group>)


@dataclass(frozen=True)
class Finish:
    """Write the saga's result."""


Command = Compensate | Dispatch | Finish
