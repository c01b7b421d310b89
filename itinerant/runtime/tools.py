"""Agents calling MCP tools (docs/mcp.md#agents-calling-mcp-tools).

An agent declares the MCP servers it uses (``agent.uses_mcp(name, url=... | command=...)``;
``ITINERANT_MCP_TOOL_SERVERS`` may say where each one is instead), and a handler calls
``await ctx.call_tool(server, tool, arguments)``. Every call:

* is checked against the request's budget first (a tool call left, and the tool's declared cost
  within the money left), and counted in the step's spend, so it is in the forwarded header;
* goes through the circuit breaker of dependency ``mcp:<server>``;
* is retried, with the runtime's backoff, when it fails for a retryable reason (the server
  cannot be reached, the connection closed, no answer in time); other failures are not;
* is a span ``execute_tool <tool>`` with the GenAI tool attributes, and metrics by server, tool
  and outcome (never ids).

Each call opens its own client session (stdio: a child process; HTTP: one session on the
server) and closes it in the same task: simple, and no session outlives its cancel scope.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import CallToolResult, Tool
from opentelemetry import trace
from pydantic import BaseModel

from itinerant.errors import BudgetExceeded, DependencyUnavailable, NonRetryableError
from itinerant.observability import metrics, tracing
from itinerant.runtime.circuit import CircuitOpen
from itinerant.runtime.llm import Completion, ToolAsk, ToolRound
from itinerant.settings import Settings

if TYPE_CHECKING:
    from itinerant.runtime.agent import HandlerContext

T = TypeVar("T", bound=BaseModel)

#: JSON-RPC code the SDK uses when the connection to the server closed.
CONNECTION_CLOSED = -32000


class ToolUnavailable(DependencyUnavailable):
    """The MCP server could not be reached or did not answer: retried, then dead-lettered."""

    reason = "tool_unavailable"
    hint = (
        "start the MCP server (or check ITINERANT_MCP_TOOL_SERVERS); the step is retried, "
        "then dead-lettered and can be replayed"
    )


class ToolFailed(NonRetryableError):
    """The tool answered with an error (bad arguments, unknown tool, the tool's own refusal)."""

    reason = "tool_failed"
    hint = "the tool refused the call; fix the arguments or the tool, then replay"


class ToolConfigError(NonRetryableError):
    reason = "tool_config"
    hint = "declare the server with agent.uses_mcp(...) or set ITINERANT_MCP_TOOL_SERVERS"


@dataclass(frozen=True)
class McpServerSpec:
    """One MCP server an agent uses: a streamable HTTP ``url``, or a stdio ``command``."""

    name: str
    url: str | None = None
    command: tuple[str, ...] = ()
    #: Declared cost in US dollars of one call of a tool, by tool name (0 when not listed).
    costs: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.url is None) == (not self.command):
            raise ToolConfigError(f"MCP server {self.name!r}: give exactly one of url or command")

    @classmethod
    def parse(
        cls, name: str, where: str, costs: Mapping[str, float] | None = None
    ) -> McpServerSpec:
        """``where`` is a URL (``http://``/``https://``) or a command line."""
        costs = dict(costs or {})
        if where.startswith(("http://", "https://")):
            return cls(name, url=where, costs=costs)
        command = tuple(shlex.split(where))
        if command and command[0] in ("python", "python3"):
            command = (sys.executable, *command[1:])
        return cls(name, command=command, costs=costs)

    @property
    def where(self) -> str:
        return self.url or shlex.join(self.command)


def tool_output(result: CallToolResult) -> dict[str, Any]:
    """The tool's structured answer, else its text as ``{"text": ...}``."""
    if isinstance(result.structured_content, dict):
        return result.structured_content
    return {"text": " ".join(getattr(part, "text", "") for part in result.content)}


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _retryable(exc: BaseException) -> bool:
    """A failure to reach the server or to hear from it (not the tool's own answer)."""
    if isinstance(exc, FileNotFoundError | PermissionError):
        return False  # the stdio command itself is wrong
    if isinstance(exc, MCPError):
        return exc.code == CONNECTION_CLOSED
    return isinstance(
        exc,
        OSError
        | TimeoutError
        | httpx2.TransportError
        | anyio.ClosedResourceError
        | anyio.BrokenResourceError
        | anyio.EndOfStream,
    )


class ToolClient:
    """One agent's MCP servers; each call opens and closes its own session."""

    def __init__(self, servers: Mapping[str, McpServerSpec], settings: Settings) -> None:
        self.settings = settings
        self.servers = dict(servers)
        for name, where in settings.mcp_tool_servers.items():
            costs = self.servers[name].costs if name in self.servers else {}
            self.servers[name] = McpServerSpec.parse(name, where, costs)

    def spec(self, server: str) -> McpServerSpec:
        try:
            return self.servers[server]
        except KeyError:
            known = ", ".join(sorted(self.servers)) or "none"
            raise ToolConfigError(
                f"no MCP server {server!r} is declared (declared: {known})"
            ) from None

    async def list_tools(self, server: str) -> list[Tool]:
        return list(await self._session_call(self.spec(server), None, None))

    async def call(self, server: str, tool: str, arguments: dict[str, Any]) -> CallToolResult:
        """One try of ``tool``: :class:`ToolUnavailable` when the server cannot be had."""
        result = await self._session_call(self.spec(server), tool, arguments)
        assert isinstance(result, CallToolResult)
        return result

    async def _session_call(
        self, spec: McpServerSpec, tool: str | None, arguments: dict[str, Any] | None
    ) -> Any:
        timeout = self.settings.mcp_tool_timeout_s
        try:
            async with (
                asyncio.timeout(timeout),
                self._transport(spec) as (read, write),
                ClientSession(read, write, read_timeout_seconds=timeout) as session,
            ):
                await session.initialize()
                if tool is None:
                    return (await session.list_tools()).tools
                return await session.call_tool(tool, arguments)
        except Exception as exc:
            leaves = _leaves(exc)
            if any(_retryable(leaf) for leaf in leaves):
                first = next(leaf for leaf in leaves if _retryable(leaf))
                raise ToolUnavailable(
                    f"MCP server {spec.name!r} at {spec.where} is unavailable: {first!r}"
                ) from exc
            if isinstance(exc, FileNotFoundError | PermissionError):
                raise ToolConfigError(
                    f"MCP server {spec.name!r}: cannot start {spec.where!r}: {exc}"
                ) from exc
            raise ToolFailed(f"MCP server {spec.name!r}: {leaves[0]!r}") from exc

    def _transport(self, spec: McpServerSpec) -> Any:
        if spec.url is not None:
            return streamable_http_client(spec.url)
        return stdio_client(
            StdioServerParameters(command=spec.command[0], args=list(spec.command[1:]))
        )


def _check_budget(ctx: HandlerContext, cost_usd: float) -> None:
    over: BudgetExceeded | None = None
    budget = ctx.budget
    if ctx.tool_calls_left <= 0:
        over = BudgetExceeded(
            "tool_calls",
            f"no tool calls left: made {budget.tool_calls + ctx.tool_calls} of "
            f"{budget.max_tool_calls}",
        )
    elif cost_usd and budget.cost_usd + ctx.cost_usd + cost_usd > budget.max_cost_usd + 1e-9:
        over = BudgetExceeded(
            "cost",
            f"the tool call would cost ${cost_usd:.6f}; "
            f"${max(budget.max_cost_usd - budget.cost_usd - ctx.cost_usd, 0):.6f} is left",
        )
    if over is not None:
        metrics.BUDGET_EXCEEDED.labels(ctx.service, over.which).inc()
        ctx.log.warning("stopping the saga: %s", over)
        raise over


async def call_tool(
    ctx: HandlerContext,
    client: ToolClient,
    server: str,
    tool: str,
    arguments: dict[str, Any],
    *,
    call_id: str | None = None,
) -> dict[str, Any]:
    """``ctx.call_tool``: budget, circuit, retries, span and metrics around one tool call."""
    spec = client.spec(server)
    cost = float(spec.costs.get(tool, 0.0))
    _check_budget(ctx, cost)
    ctx.spend(tool_calls=1, cost_usd=cost)
    started = time.perf_counter()
    outcome = "error"
    tracer = trace.get_tracer("itinerant.tools")
    with tracer.start_as_current_span(
        f"execute_tool {tool}",
        kind=trace.SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": call_id or uuid.uuid4().hex,
            "gen_ai.tool.type": "extension",
            "itinerant.mcp.server": server,
        },
    ) as span:
        try:
            result = await _with_retries(ctx, client, server, tool, arguments)
            if result.is_error:
                text = tool_output(result).get("text") or str(result.structured_content)[:300]
                outcome = "tool_error"
                raise ToolFailed(f"{server}.{tool} answered with an error: {text}")
            outcome = "ok"
            return tool_output(result)
        except Exception as exc:
            reason = getattr(exc, "reason", type(exc).__name__)
            if outcome != "tool_error":
                outcome = "unavailable" if isinstance(exc, DependencyUnavailable) else "error"
            tracing.mark_error(span, str(reason), str(exc))
            raise
        finally:
            labels = (ctx.service, server, tool)
            metrics.TOOL_CALLS.labels(*labels, outcome).inc()
            metrics.TOOL_CALL_SECONDS.labels(*labels).observe(time.perf_counter() - started)


async def _with_retries(
    ctx: HandlerContext, client: ToolClient, server: str, tool: str, arguments: dict[str, Any]
) -> CallToolResult:
    settings = ctx.settings
    delay = settings.retry_base_delay_s
    attempt = 1
    while True:
        try:
            with ctx.guard(f"mcp:{server}"):
                return await client.call(server, tool, arguments)
        except CircuitOpen:
            raise
        except ToolUnavailable as exc:
            if attempt >= settings.max_attempts:
                raise
            ctx.log.info("tool %s.%s: %s; retry %d in %.2fs", server, tool, exc, attempt, delay)
            metrics.RETRIES.labels(ctx.service, exc.reason).inc()
            tracing.retry_event(attempt, exc.reason, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_max_delay_s)
            attempt += 1


def offer(tools: list[Tool]) -> list[dict[str, Any]]:
    """MCP tools in the Chat Completions ``tools`` format."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description or "",
                "parameters": tool.input_schema,
            },
        }
        for tool in tools
    ]


async def generate_with_tools(
    ctx: HandlerContext,
    client: ToolClient,
    task: str,
    prompt: str,
    output: type[T],
    server: str,
    max_rounds: int,
) -> Completion[T]:
    """``ctx.generate(..., tools=server)``: offer ``server``'s tools to the model, run each call
    it asks for through :func:`call_tool` (budget checked before each), feed the results back,
    and return its typed answer (docs/mcp.md#function-calling)."""
    chat_round = getattr(ctx.provider, "chat_round", None)
    if chat_round is None:
        raise ToolConfigError(
            f"the LLM provider {ctx.provider.name!r} cannot call tools; "
            "set ITINERANT_LLM_PROVIDER=openai"
        )
    with ctx.guard(f"mcp:{server}"):
        tools = offer(await client.list_tools(server))
    request: dict[str, Any] = ctx.provider.request(task, prompt, output, None)  # type: ignore[attr-defined]
    messages: list[dict[str, Any]] = list(request["messages"])
    tokens = completion_tokens = 0
    cost = 0.0
    for _ in range(max_rounds):
        ctx.check_spend_before()
        with ctx.guard("llm"):
            step: ToolRound[T] = await chat_round(
                task, messages, output, tools=tools, max_tokens=ctx.tokens_left or None
            )
        ctx.spend(tokens=step.prompt_tokens + step.completion_tokens, cost_usd=step.cost_usd)
        tokens += step.prompt_tokens
        completion_tokens += step.completion_tokens
        cost += step.cost_usd
        ctx.check_spend_after()
        if step.completion is not None:
            return Completion(
                step.completion.value,
                step.completion.model,
                tokens,
                completion_tokens,
                round(cost, 8),
            )
        messages.append(step.message)
        for ask in step.asks:
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": ask.call_id,
                    "content": json.dumps(await _answer_ask(ctx, client, server, ask)),
                }
            )
    raise ToolFailed(
        f"the model asked for tools {max_rounds} rounds in a row without answering",
        reason="tool_rounds_exhausted",
    )


async def _answer_ask(
    ctx: HandlerContext, client: ToolClient, server: str, ask: ToolAsk
) -> dict[str, Any]:
    """The tool's answer to one of the model's calls; its refusal goes back to the model."""
    try:
        arguments = json.loads(ask.arguments or "{}")
    except json.JSONDecodeError as exc:
        return {"error": f"the arguments are not JSON: {exc}"}
    if not isinstance(arguments, dict):
        return {"error": "the arguments must be a JSON object"}
    try:
        return await call_tool(ctx, client, server, ask.name, arguments, call_id=ask.call_id)
    except ToolFailed as exc:
        return {"error": str(exc)}
