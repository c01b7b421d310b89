"""``ctx.call_tool`` (docs/mcp.md#agents-calling-mcp-tools) against the real inventory MCP server
over stdio: the answer, the budget, retries and classification, the span and the metrics."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from pydantic import BaseModel

from itinerant import Agent, HandlerContext
from itinerant.errors import BudgetExceeded, RetryableError
from itinerant.runtime.circuit import CircuitOpen
from itinerant.runtime.tools import ToolConfigError, ToolFailed, ToolUnavailable
from itinerant.settings import Settings
from itinerant.testing import run_handler
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import now_utc

INVENTORY = [sys.executable, "-m", "services.inventory.mcp_server", "--stdio"]


class Ask(BaseModel):
    server: str = "inventory"
    tool: str
    arguments: dict[str, Any]
    times: int = 1


class Answer(BaseModel):
    results: list[dict[str, Any]]


def agent_with(name: str = "toolbox", **server: Any) -> Agent:
    agent = Agent(name, "Calls MCP tools.")
    agent.uses_mcp("inventory", **server)

    @agent.handler("ask")
    async def ask(req: Ask, ctx: HandlerContext) -> Answer:
        return Answer(
            results=[
                await ctx.call_tool(req.server, req.tool, req.arguments) for _ in range(req.times)
            ]
        )

    return agent


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "itinerant-test"}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    yield memory


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> InMemorySpanExporter:
    exporter.clear()
    return exporter


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, metrics_port_base=0, max_attempts=2, retry_base_delay_s=0.0)


def calls(tool: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "itinerant_tool_calls_total",
        {"service": "toolbox", "server": "inventory", "tool": tool, "outcome": outcome},
    )
    return value or 0.0


async def test_a_tool_call_answers_counts_and_is_traced(
    settings: Settings, spans: InMemorySpanExporter
) -> None:
    before = calls("search_hotels", "ok")
    done = await run_handler(
        agent_with(command=INVENTORY),
        "ask",
        Ask(tool="search_hotels", arguments={"city": "Lisbon"}),
        settings=settings,
    )
    assert done.output.results[0]["city"] == "LIS"  # type: ignore[attr-defined]
    assert done.context.tool_calls == 1
    assert calls("search_hotels", "ok") == before + 1
    (span,) = [s for s in spans.get_finished_spans() if s.name == "execute_tool search_hotels"]
    attributes = dict(span.attributes or {})
    assert attributes["gen_ai.operation.name"] == "execute_tool"
    assert attributes["gen_ai.tool.name"] == "search_hotels"
    assert attributes["gen_ai.tool.call.id"]
    assert attributes["itinerant.mcp.server"] == "inventory"


async def test_no_tool_call_left_stops_the_saga_before_the_call(settings: Settings) -> None:
    budget = Budget(
        max_hops=5, deadline=now_utc() + timedelta(minutes=1), max_tool_calls=1, tool_calls=0
    )
    before = calls("search_hotels", "ok")
    with pytest.raises(BudgetExceeded) as err:
        await run_handler(
            agent_with(command=INVENTORY),
            "ask",
            Ask(tool="search_hotels", arguments={"city": "BER"}, times=2),
            settings=settings,
            budget=budget,
        )
    assert err.value.which == "tool_calls"
    assert calls("search_hotels", "ok") == before + 1  # the second call never ran


async def test_a_declared_cost_is_checked_before_and_spent(settings: Settings) -> None:
    agent = agent_with(command=INVENTORY, costs={"search_hotels": 0.25})
    budget = Budget(max_hops=5, deadline=now_utc() + timedelta(minutes=1), max_cost_usd=0.3)
    done = await run_handler(
        agent, "ask", Ask(tool="search_hotels", arguments={"city": "BER"}), budget=budget
    )
    assert done.context.cost_usd == pytest.approx(0.25)
    with pytest.raises(BudgetExceeded) as err:
        await run_handler(
            agent,
            "ask",
            Ask(tool="search_hotels", arguments={"city": "BER"}, times=2),
            budget=budget,
        )
    assert err.value.which == "cost"


async def test_a_tool_error_is_not_retried(settings: Settings) -> None:
    before = calls("search_hotels", "tool_error")
    with pytest.raises(ToolFailed, match="unknown city"):
        await run_handler(
            agent_with(command=INVENTORY),
            "ask",
            Ask(tool="search_hotels", arguments={"city": "Atlantis"}),
            settings=settings,
        )
    assert calls("search_hotels", "tool_error") == before + 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_retried_then_retryable_and_opens_the_circuit(
    tmp_path: Path,
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        metrics_port_base=0,
        max_attempts=2,
        retry_base_delay_s=0.0,
        circuit_threshold=2,
        mcp_tool_servers={"inventory": f"http://127.0.0.1:{_closed_port()}/mcp"},
    )
    # the setting moves it to a closed port; a service of its own, for a breaker of its own
    agent = agent_with("toolbox-down", command=INVENTORY)
    ask = Ask(tool="search_flights", arguments={"origin": "AMS", "destination": "BER"})
    with pytest.raises(ToolUnavailable) as err:
        await run_handler(agent, "ask", ask, settings=settings)
    assert isinstance(err.value, RetryableError)
    assert "start the MCP server" in err.value.describe()
    with pytest.raises(CircuitOpen):  # two failures in a row opened mcp:inventory
        await run_handler(agent, "ask", ask, settings=settings)


async def test_an_undeclared_server_says_what_to_declare(settings: Settings) -> None:
    with pytest.raises(ToolConfigError, match="no MCP server 'elsewhere'"):
        await run_handler(
            agent_with(command=INVENTORY),
            "ask",
            Ask(server="elsewhere", tool="x", arguments={}),
            settings=settings,
        )
