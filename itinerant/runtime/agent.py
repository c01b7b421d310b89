"""How an agent declares its job: typed handlers, compensations, and its own tables.

    agent = Agent("orders", "Places orders with the warehouse.")

    @agent.handler("place", side_effects=True)
    async def place(order: Order, ctx: HandlerContext) -> Order: ...

    @agent.compensation("place")
    async def cancel(order: Order, ctx: HandlerContext) -> None: ...

Everything else (decoding, dedup, budgets, slips, retries, DLQ, tracing, metrics) is the runtime's.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from itinerant.errors import BudgetExceeded
from itinerant.observability import metrics
from itinerant.runtime import circuit
from itinerant.runtime.llm import Completion, LLMProvider
from itinerant.runtime.store import Database
from itinerant.runtime.tools import (
    McpServerSpec,
    ToolClient,
    ToolConfigError,
    call_tool,
    generate_with_tools,
)
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.flows import Flow
from itinerant.wire.slip import Slip, SlipStep

T = typing.TypeVar("T", bound=BaseModel)

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
    db: Database
    provider: LLMProvider
    budget: Budget
    slip: Slip
    log: logging.LoggerAdapter[logging.Logger]
    settings: Settings
    route: list[SlipStep] | None = None
    tokens: int = 0
    cost_usd: float = 0.0
    #: MCP tool calls made by this step (docs/mcp.md#agents-calling-mcp-tools).
    tool_calls: int = 0
    #: The customer identity the saga acts for, as the coordinator established it at ingress
    #: (an authenticated caller, or ``anonymous:<saga id>`` for a bare request).
    customer: str = "anonymous"
    #: The agent's MCP servers (docs/mcp.md#agents-calling-mcp-tools); None: it declares none.
    tools: ToolClient | None = None

    @property
    def customer_is_operator(self) -> bool:
        """True when the saga acts for one of the mesh's operators (who may act on anyone's
        behalf; record it when they do)."""
        return self.customer in self.settings.operators

    @property
    def idempotency_key(self) -> str:
        """Key for any side effect of this step: the input message id
        (docs/architecture.md#delivery-guarantees)."""
        return self.message_id

    def reroute(self, steps: Sequence[SlipStep]) -> None:
        """Dynamic routing: replace every step after this one."""
        self.route = list(steps)

    def follow(self, flow: Flow) -> None:
        """Content-based routing: every step after this one is ``flow``'s."""
        self.reroute(flow.steps)

    def guard(self, dependency: str) -> AbstractContextManager[None]:
        """Calls to ``dependency`` inside this block go through its circuit breaker."""
        return circuit.breaker(
            self.service,
            dependency,
            self.settings.circuit_threshold,
            self.settings.circuit_reset_s,
        ).guard()

    def spend(self, *, tokens: int = 0, cost_usd: float = 0.0, tool_calls: int = 0) -> None:
        self.tokens += tokens
        self.cost_usd += cost_usd
        self.tool_calls += tool_calls

    @property
    def tool_calls_left(self) -> int:
        """Tool calls the request may still make, this step's own included."""
        return max(self.budget.tool_calls_left - self.tool_calls, 0)

    @property
    def tokens_left(self) -> int:
        """Tokens the request may still spend, this step's own spend included."""
        return max(self.budget.tokens_left - self.tokens, 0)

    async def call_tool(
        self,
        server: str,
        tool: str,
        arguments: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Call ``tool`` on the declared MCP server ``server`` and return its structured answer
        (docs/mcp.md#agents-calling-mcp-tools): budget checked first, counted in this step's
        spend, through the ``mcp:<server>`` circuit breaker, retried when the server cannot be
        reached, traced as ``execute_tool <tool>``."""
        if self.tools is None:
            raise ToolConfigError(
                f"{self.service} declares no MCP server; use agent.uses_mcp({server!r}, ...)"
            )
        return await call_tool(self, self.tools, server, tool, arguments or {}, call_id=call_id)

    async def generate_with_tools(
        self, task: str, prompt: str, output: type[T], *, tools: str, max_rounds: int = 8
    ) -> Completion[T]:
        """Like :meth:`generate`, with the tools of the declared MCP server ``tools`` offered to
        the model (function calling, docs/mcp.md#function-calling): each call it asks for is a
        :meth:`call_tool` (budget checked before each), the token budget is checked before each
        round, and the typed answer comes back."""
        if self.tools is None:
            raise ToolConfigError(
                f"{self.service} declares no MCP server; use agent.uses_mcp({tools!r}, ...)"
            )
        return await generate_with_tools(self, self.tools, task, prompt, output, tools, max_rounds)

    def check_spend_before(self) -> None:
        """Stop the saga when no token or money is left (a metered provider only)."""
        if self.provider.metered:
            self._check_spend(before=True)

    def check_spend_after(self) -> None:
        """Stop the saga when the spend went past a limit (a metered provider only)."""
        if self.provider.metered:
            self._check_spend(before=False)

    async def generate(self, task: str, prompt: str, output: type[T]) -> Completion[T]:
        """Ask the LLM for a typed answer, within the request's budget
        (docs/architecture.md#budgets-and-loops).

        Before the call: nothing left of the token or cost budget stops the saga, and the
        request's ``max_tokens`` is what is left. The call goes through the ``llm`` circuit
        breaker (a reply that does not validate is the model's fault, not the server's, so it
        does not open the circuit). After it: the usage is added to this step's spend, and a
        call that took the request past a limit stops the saga at this step."""
        metered = self.provider.metered
        if metered:
            self._check_spend(before=True)
        failure: Exception | None = None
        with self.guard("llm"):
            try:
                completion = await self.provider.generate(
                    task, prompt, output, max_tokens=self.tokens_left if metered else None
                )
            except BudgetExceeded as exc:  # e.g. the reply was cut at the tokens left
                metrics.BUDGET_EXCEEDED.labels(self.service, exc.which).inc()
                raise
            except Exception as exc:  # re-raised below, outside the breaker
                if getattr(exc, "server_answered", False):
                    failure = exc
                else:
                    raise
        if failure is not None:
            raise failure
        self.spend(
            tokens=completion.prompt_tokens + completion.completion_tokens,
            cost_usd=completion.cost_usd,
        )
        if metered:
            self._check_spend(before=False)
        return completion

    def _check_spend(self, *, before: bool) -> None:
        spent = self.budget.spent(tokens=self.tokens, cost_usd=self.cost_usd)
        over: BudgetExceeded | None = None
        if before and spent.tokens >= spent.max_tokens:
            over = BudgetExceeded(
                "tokens", f"no tokens left: used {spent.tokens} of {spent.max_tokens}"
            )
        elif before and spent.cost_usd >= spent.max_cost_usd:
            over = BudgetExceeded(
                "cost", f"no money left: spent ${spent.cost_usd:.6f} of ${spent.max_cost_usd:.6f}"
            )
        elif spent.tokens > spent.max_tokens:
            over = BudgetExceeded(
                "tokens",
                f"the LLM call took the request to {spent.tokens} tokens, over its "
                f"{spent.max_tokens}",
            )
        elif spent.cost_usd > spent.max_cost_usd:
            over = BudgetExceeded(
                "cost",
                f"the LLM call took the request to ${spent.cost_usd:.6f}, over its "
                f"${spent.max_cost_usd:.6f}",
            )
        if over is not None:
            metrics.BUDGET_EXCEEDED.labels(self.service, over.which).inc()
            self.log.warning("stopping the saga: %s", over)
            raise over


@dataclass(frozen=True)
class HandlerSpec:
    action: str
    func: Handler
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    side_effects: bool
    versions: frozenset[int]
    timeout_s: float
    #: Steps whose signed visits must be in the slip before this one runs (an agent's name, or
    #: ``"approval"`` for an approval gate): docs/security.md#the-routing-slip.
    requires: tuple[str, ...] = ()


class Agent:
    """The definition of one agent service."""

    def __init__(self, name: str, description: str, *, migrations: tuple[str, ...] = ()) -> None:
        self.name = name
        self.description = description
        self.migrations = migrations
        self.handlers: dict[str, HandlerSpec] = {}
        self.compensations: dict[str, Compensation] = {}
        self.setups: list[Setup] = []
        self.mcp_servers: dict[str, McpServerSpec] = {}

    def uses_mcp(
        self,
        name: str,
        *,
        url: str | None = None,
        command: Sequence[str] = (),
        costs: dict[str, float] | None = None,
    ) -> None:
        """Declare an MCP server this agent's handlers call (``ctx.call_tool(name, ...)``):
        streamable HTTP at ``url`` or a stdio ``command``; ``costs`` in US dollars per call of a
        tool. ``ITINERANT_MCP_TOOL_SERVERS`` may move it (docs/mcp.md#agents-calling-mcp-tools)."""
        self.mcp_servers[name] = McpServerSpec(
            name, url=url, command=tuple(command), costs=dict(costs or {})
        )

    def tool_client(self, settings: Settings) -> ToolClient | None:
        """The client of this agent's MCP servers, or None when it uses none."""
        if not self.mcp_servers:
            return None
        return ToolClient(self.mcp_servers, settings)

    def handler(
        self,
        action: str = "run",
        *,
        side_effects: bool = False,
        versions: tuple[int, ...] = (1,),
        timeout_s: float = 30.0,
        requires: tuple[str, ...] = (),
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
                requires=requires,
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
