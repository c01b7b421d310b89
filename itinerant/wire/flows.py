"""Flows: the routes an application declares once, by name. The agent that routes (often the
entry step's) picks one with ``ctx.follow(flow)``; the runtime advances the slip from there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from itinerant.wire.slip import SlipStep, branches_of


@dataclass(frozen=True)
class Flow:
    name: str
    steps: Sequence[SlipStep]
    description: str = ""

    def agents(self) -> list[str]:
        return [step.agent for s in self.steps for step in branches_of(s)]
