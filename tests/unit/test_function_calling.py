"""Function calling (docs/mcp.md#function-calling): the OpenAI provider offers an agent's MCP
tools to the model, runs the calls it asks for through ``ctx.call_tool`` against the real
inventory server (stdio), feeds the results back and returns the typed answer. The model is the
fake OpenAI server of tests/fake_openai.py."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from itinerant import Agent, HandlerContext
from itinerant.errors import BudgetExceeded
from itinerant.runtime.openai_provider import OpenAIProvider
from itinerant.settings import Settings
from itinerant.testing import run_handler
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import now_utc
from tests.fake_openai import FakeOpenAI, Reply

INVENTORY = [sys.executable, "-m", "services.inventory.mcp_server", "--stdio"]


class Ask(BaseModel):
    case: str
    city: str


class Pick(BaseModel):
    hotel_id: str


agent = Agent("concierge", "Picks a hotel with the model and the inventory's tools.")
agent.uses_mcp("inventory", command=INVENTORY)


@agent.handler("pick")
async def pick(ask: Ask, ctx: HandlerContext) -> Pick:
    done = await ctx.generate_with_tools(
        "pick a hotel",
        f"[case:{ask.case}] the cheapest hotel in {ask.city}",
        Pick,
        tools="inventory",
    )
    return done.value


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def settings_for(tmp_path: Path, fake: FakeOpenAI) -> Settings:
    return Settings(
        data_dir=tmp_path,
        metrics_port_base=0,
        llm_provider="openai",
        llm_base_url=fake.url,
        llm_timeout_s=5,
    )


async def test_the_model_calls_a_tool_then_answers(tmp_path: Path, fake: FakeOpenAI) -> None:
    fake.script(
        "tools",
        Reply(tool_calls=(("search_hotels", {"city": "LIS"}),)),
        Reply(content=json.dumps({"hotel_id": "H-LIS-1"})),
    )
    settings = settings_for(tmp_path, fake)
    done = await run_handler(
        agent,
        "pick",
        Ask(case="tools", city="Lisbon"),
        settings=settings,
        provider=OpenAIProvider(settings, "concierge"),
    )
    assert done.output == Pick(hotel_id="H-LIS-1")
    first, second = fake.asked("tools")
    assert {t["function"]["name"] for t in first["tools"]} == {"search_flights", "search_hotels"}
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_0"
    assert json.loads(tool_message["content"])["city"] == "LIS"
    assert done.context.tool_calls == 1
    assert done.tokens == 2 * (120 + 60)  # both rounds spent


async def test_each_tool_call_is_checked_against_the_budget(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    fake.script("nobudget", then=Reply(tool_calls=(("search_hotels", {"city": "LIS"}),)))
    settings = settings_for(tmp_path, fake)
    budget = Budget(
        max_hops=5,
        deadline=now_utc() + timedelta(minutes=1),
        max_tokens=10_000,
        max_cost_usd=1.0,
        max_tool_calls=0,
    )
    with pytest.raises(BudgetExceeded) as err:
        await run_handler(
            agent,
            "pick",
            Ask(case="nobudget", city="Lisbon"),
            settings=settings,
            provider=OpenAIProvider(settings, "concierge"),
            budget=budget,
        )
    assert err.value.which == "tool_calls"
    assert len(fake.asked("nobudget")) == 1  # stopped before the tool, not after more rounds
