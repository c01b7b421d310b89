"""The routing slip (docs/wire-contract.md#routing-slip): the steps still to run, a cursor, and
where the message has been.

A step is one agent (``Step``), a parallel group of agents (``ParallelGroup``; fanned out by the
runtime, joined by the coordinator), or a human approval gate (``Approval``; held by the
coordinator until an operator decides, or passed when the mesh's policy sees no reason to ask).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from itinerant.errors import InvalidSlip, LoopDetected, MessageTooLarge, UnknownAgent

_JOIN = re.compile(r"^(all|first|quorum:[1-9][0-9]*)$")


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str = Field(min_length=1, max_length=64)
    action: str = Field(default="run", min_length=1, max_length=64)
    when: str | None = Field(default=None, max_length=256, description="skip unless this holds")


class ParallelGroup(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    parallel: list[Step] = Field(min_length=1, max_length=16)
    join: str = "all"
    timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("join")
    @classmethod
    def _valid_join(cls, value: str) -> str:
        if not _JOIN.match(value):
            raise ValueError("join must be 'all', 'first' or 'quorum:N'")
        return value


class Approval(BaseModel):
    """A human approval gate: the coordinator asks the mesh's approval policy about the payload
    that reaches it and holds the saga for a decision when the policy gives a reason."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approval: str = Field(default="gate", min_length=1, max_length=64, description="gate name")


#: The label an approval gate's visit carries in ``visited`` (it is no agent).
APPROVAL_VISIT = "approval"

SlipStep = Annotated[Step | ParallelGroup | Approval, Field(union_mode="left_to_right")]


class Visit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: str
    id: str
    at: datetime
    skipped: bool = False
    step: int | None = Field(default=None, ge=0, description="index of the step visited")
    by: str | None = Field(default=None, max_length=64, description="who decided, at a gate")
    sig: str | None = Field(default=None, description="the visitor's signature, chained")


class Slip(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    steps: list[SlipStep] = Field(min_length=1, max_length=64)
    next: int = Field(default=0, ge=0)
    branch: int | None = Field(default=None, ge=0, description="branch of a parallel group")
    visited: list[Visit] = Field(default_factory=list)

    # -- reading -------------------------------------------------------------------------------

    @property
    def current(self) -> SlipStep:
        if self.next >= len(self.steps):
            raise InvalidSlip(f"slip cursor {self.next} is past its {len(self.steps)} steps")
        return self.steps[self.next]

    @property
    def at_end(self) -> bool:
        return self.next >= len(self.steps)

    def own_step(self) -> Step:
        """The step this message is for: the current step, or its branch of a group."""
        step = self.current
        if isinstance(step, Approval):
            raise InvalidSlip("slip points at an approval gate, which no agent runs")
        if isinstance(step, ParallelGroup):
            if self.branch is None or self.branch >= len(step.parallel):
                raise InvalidSlip(
                    f"slip points at a parallel group but its branch is {self.branch!r}"
                )
            return step.parallel[self.branch]
        if self.branch is not None:
            raise InvalidSlip("slip has a branch but does not point at a parallel group")
        return step

    def deliveries(self) -> list[tuple[Slip, Step | Approval]]:
        """Where the step at the cursor goes: one delivery, or one per branch of a group."""
        step = self.current
        if isinstance(step, ParallelGroup):
            return [(self.model_copy(update={"branch": i}), b) for i, b in enumerate(step.parallel)]
        return [(self.model_copy(update={"branch": None}), step)]  # a Step or an Approval

    def joined(self, branch_visits: list[Visit]) -> Slip:
        """The slip after a parallel group: every branch's visit recorded, cursor past it."""
        return self.model_copy(
            update={
                "next": self.next + 1,
                "branch": None,
                "visited": [*self.visited, *branch_visits],
            }
        )

    def agents(self) -> list[str]:
        names: list[str] = []
        for step in self.steps:
            names.extend(s.agent for s in branches_of(step))
        return names

    # -- changing (returns a new slip) ---------------------------------------------------------

    def advanced(
        self,
        agent: str,
        message_id: str,
        at: datetime,
        *,
        skipped: bool = False,
        by: str | None = None,
    ) -> Slip:
        """After this agent's step. A branch records its visit but keeps the cursor on its group:
        the coordinator moves past the group when the join holds."""
        visit = Visit(agent=agent, id=message_id, at=at, skipped=skipped, step=self.next, by=by)
        step = self.next if self.branch is not None else self.next + 1
        return self.model_copy(update={"next": step, "visited": [*self.visited, visit]})

    def with_remaining(self, steps: list[SlipStep]) -> Slip:
        """Dynamic routing: replace every step after the current one."""
        return self.model_copy(update={"steps": [*self.steps[: self.next + 1], *steps]})

    # -- checks --------------------------------------------------------------------------------

    def check_agents(self, known: list[str]) -> None:
        unknown = sorted({a for a in self.agents() if a not in known})
        if unknown:
            raise UnknownAgent(
                f"routing slip names unknown agent(s) {unknown}; known agents: {sorted(known)}"
            )

    def check_loops(self) -> None:
        """An agent visited more often than the slip lists it is a loop
        (docs/architecture.md#budgets-and-loops)."""
        allowed = Counter(self.agents())
        allowed[APPROVAL_VISIT] = sum(isinstance(step, Approval) for step in self.steps)
        seen = Counter(v.agent for v in self.visited if not v.skipped)
        for agent, count in seen.items():
            if count > max(allowed.get(agent, 0), 1):
                cycle = " -> ".join(v.agent for v in self.visited)
                raise LoopDetected(
                    f"agent {agent!r} visited {count} times but the slip allows "
                    f"{allowed.get(agent, 0)}: {cycle}"
                )

    # -- wire ----------------------------------------------------------------------------------

    def encode(self, max_bytes: int) -> bytes:
        raw = self.model_dump_json(exclude_defaults=True).encode()
        if len(raw) > max_bytes:
            raise MessageTooLarge(
                f"routing slip is {len(raw)} bytes, over the {max_bytes}-byte cap "
                "(ITINERANT_MAX_SLIP_BYTES)"
            )
        return raw

    @classmethod
    def decode(cls, raw: bytes) -> Slip:
        try:
            return cls.model_validate_json(raw)  # one parse, in pydantic-core
        except (ValueError, ValidationError, RecursionError) as exc:
            raise InvalidSlip(f"ce_routingslip is not a valid routing slip: {_short(exc)}") from exc


def branches_of(step: SlipStep) -> list[Step]:
    """The agent steps of a slip step: a group's branches, a step itself, none for a gate."""
    if isinstance(step, ParallelGroup):
        return list(step.parallel)
    return [] if isinstance(step, Approval) else [step]


def _short(exc: Exception, limit: int = 300) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def linear(*steps: tuple[str, str] | str) -> Slip:
    """A straight-line slip: ``linear("intake", ("orders", "place"))``."""
    built = [Step(agent=s) if isinstance(s, str) else Step(agent=s[0], action=s[1]) for s in steps]
    return Slip(steps=list(built))
