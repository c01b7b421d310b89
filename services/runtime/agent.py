"""How an agent declares its job: typed handlers, compensations, and its own tables.

    agent = Agent("flights", "Books flights against the inventory.")

    @agent.handler("book", side_effects=True)
    async def book(trip: TripDocument, ctx: HandlerContext) -> TripDocument: ...

    @agent.compensation("book")
    async def cancel(trip: TripDocument, ctx: HandlerContext) -> None: ...

Everything else (decoding, dedup, budgets, slips, retries, DLQ, tracing, metrics) is the runtime's.
"""

from __future__ import annotations

import logging
import sqlite3
import typing
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from . import circuit
from .budget import Budget
from .llm import LLMProvider
from .settings import Settings
from .slip import Slip, SlipStep

Handler = Callable[[Any, "HandlerContext"], Awaitable[BaseModel]]
Compensation = Callable[[Any, "HandlerContext"], Awaitable[None]]
Setup = Callable[["AgentServices"], None]


@dataclass
class AgentServices:
    """What the runtime hands an agent once at start-up (to register provider rules, etc.)."""

    provider: LLMProvider
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class HandlerContext:
    """Everything a handler may use. ``db`` is inside the same transaction as the inbox record."""

    service: str
    saga_id: str
    message_id: str
    db: sqlite3.Connection
    provider: LLMProvider
    budget: Budget
    slip: Slip
    log: logging.LoggerAdapter[logging.Logger]
    settings: Settings
    route: list[SlipStep] | None = None
    tokens: int = 0
    cost_usd: float = 0.0

    @property
    def idempotency_key(self) -> str:
        """Key for any side effect of this step: the input message id (DESIGN §5)."""
        return self.message_id

    def reroute(self, steps: list[SlipStep]) -> None:
        """Dynamic routing: replace every step after this one."""
        self.route = list(steps)

    def guard(self, dependency: str) -> AbstractContextManager[None]:
        """Calls to ``dependency`` inside this block go through its circuit breaker."""
        return circuit.breaker(
            self.service,
            dependency,
            self.settings.circuit_threshold,
            self.settings.circuit_reset_s,
        ).guard()

    def spend(self, *, tokens: int = 0, cost_usd: float = 0.0) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd


@dataclass(frozen=True)
class HandlerSpec:
    action: str
    func: Handler
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    side_effects: bool
    versions: frozenset[int]
    timeout_s: float


class Agent:
    """The definition of one agent service."""

    def __init__(self, name: str, description: str, *, migrations: tuple[str, ...] = ()) -> None:
        self.name = name
        self.description = description
        self.migrations = migrations
        self.handlers: dict[str, HandlerSpec] = {}
        self.compensations: dict[str, Compensation] = {}
        self.setups: list[Setup] = []

    def handler(
        self,
        action: str = "run",
        *,
        side_effects: bool = False,
        versions: tuple[int, ...] = (1,),
        timeout_s: float = 30.0,
    ) -> Callable[[Handler], Handler]:
        def register(func: Handler) -> Handler:
            hints = typing.get_type_hints(func)
            params = [v for k, v in hints.items() if k != "return"]
            self.handlers[action] = HandlerSpec(
                action=action,
                func=func,
                input_model=params[0],
                output_model=hints["return"],
                side_effects=side_effects,
                versions=frozenset(versions),
                timeout_s=timeout_s,
            )
            return func

        return register

    def compensation(self, action: str) -> Callable[[Compensation], Compensation]:
        def register(func: Compensation) -> Compensation:
            self.compensations[action] = func
            return func

        return register

    def on_start(self, func: Setup) -> Setup:
        self.setups.append(func)
        return func
