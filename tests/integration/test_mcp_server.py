"""The mesh as an MCP server (docs/mcp.md), driven by the ``mcp`` SDK's own client against the
whole system on the real broker: `itinerant up` starts the server (ITINERANT_MCP_PORT); callers
alice and bob and the generated operator use the gateway's tokens. Also the stdio server
(`itinerant mcp serve --stdio`), started by the SDK's stdio client."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from itinerant.security.tokens import operator_token

from .conftest import EXAMPLES, Broker, System, free_port, start_system

pytestmark = pytest.mark.integration

ALICE = "alice-mcp-integration-token-0123456789"
BOB = "bob-mcp-integration-token-0123456789"


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(
        broker,
        tmp_path_factory.mktemp("mcp"),
        mcp_port=free_port(),
        gateway_tokens={"alice": ALICE, "bob": BOB},
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def url(system: System) -> str:
    return f"http://127.0.0.1:{system.settings.mcp_port}/mcp"


def operator(system: System) -> str:
    token = operator_token(system.settings)
    assert token is not None, "the supervisor generates an operator token"
    return token.get_secret_value()


@asynccontextmanager
async def session(system: System, token: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        streamable_http_client(url(system), http_client=http) as (read, write),
        ClientSession(read, write) as mcp,
    ):
        await mcp.initialize()
        yield mcp


def trip(request_id: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / "trip.json").read_text())
    raw["request_id"] = request_id or str(uuid.uuid4())
    return raw


def body(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, f"expected a tool error, got {str(result.structured_content)[:300]}"
    return " ".join(getattr(part, "text", "") for part in result.content)


async def test_the_tools_are_listed(system: System) -> None:
    async with session(system, ALICE) as mcp:
        tools = {tool.name: tool for tool in (await mcp.list_tools()).tools}
    assert set(tools) == {"publish_request", "get_saga", "list_dead_letters", "list_approvals"}
    request_schema = tools["publish_request"].input_schema["properties"]["request"]
    assert "$ref" in request_schema or "properties" in request_schema  # the mesh's own model


async def test_a_request_is_published_and_its_result_returned(system: System) -> None:
    async with session(system, ALICE) as mcp:
        answer = body(await mcp.call_tool("publish_request", {"request": trip(), "wait_s": 120}))
        assert answer["published"] is True
        assert answer["status"] != "pending", answer
        assert answer["result"]["saga_id"] == answer["saga_id"]
        saga = body(await mcp.call_tool("get_saga", {"saga_id": answer["saga_id"]}))
    assert saga["customer"] == "alice"  # published for alice, signed by the gateway delegate
    assert saga["result"]["status"] == answer["status"]
    assert saga["timeline"], saga


async def test_the_same_request_id_is_the_same_saga(system: System) -> None:
    request = trip("alice-repeat-1")
    async with session(system, ALICE) as mcp:
        first = body(await mcp.call_tool("publish_request", {"request": request}))
        again = body(await mcp.call_tool("publish_request", {"request": request}))
    assert again["saga_id"] == first["saga_id"]
    assert again["published"] is False


async def test_a_caller_cannot_read_another_callers_saga(system: System) -> None:
    async with session(system, ALICE) as mcp:
        saga_id = body(await mcp.call_tool("publish_request", {"request": trip(), "wait_s": 120}))[
            "saga_id"
        ]
    async with session(system, BOB) as mcp:
        text = error_text(await mcp.call_tool("get_saga", {"saga_id": saga_id}))
    assert "no saga" in text
    async with session(system, operator(system)) as mcp:
        seen = body(await mcp.call_tool("get_saga", {"saga_id": saga_id}))
    assert seen["customer"] == "alice"


async def test_an_invalid_request_is_refused_with_what_is_wrong(system: System) -> None:
    request = trip()
    del request["traveller"]
    async with session(system, ALICE) as mcp:
        text = error_text(await mcp.call_tool("publish_request", {"request": request}))
    assert "traveller" in text


async def test_operator_tools_are_refused_to_a_caller(system: System) -> None:
    async with session(system, BOB) as mcp:
        for tool in ("list_dead_letters", "list_approvals"):
            text = error_text(await mcp.call_tool(tool, {}))
            assert "for operators" in text and "'bob'" in text


async def test_an_operator_lists_dead_letters_and_approvals(system: System) -> None:
    marker = str(uuid.uuid4())
    system.publish_raw(system.settings.requests_topic, b"not json", key=marker.encode())
    system.dead_letters(lambda seen: seen.key == marker)
    async with session(system, operator(system)) as mcp:
        letters = body(await mcp.call_tool("list_dead_letters", {"status": None, "limit": 1000}))
        approvals = body(await mcp.call_tool("list_approvals", {}))
    assert letters["count"] >= 1 and letters["entries"], letters
    assert all("reason" in entry for entry in letters["entries"])
    assert approvals["count"] == len(approvals["approvals"])


async def test_no_token_is_401(system: System) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(url(system), json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        wrong = await http.post(
            url(system),
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={"Authorization": "Bearer not-a-token-of-this-mesh-at-all"},
        )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in answer.json()["error"]
    assert wrong.status_code == 401


async def test_stdio_acts_for_the_token_it_is_given(system: System) -> None:
    env = {**system.settings.to_env(), "ITINERANT_MCP_TOKEN": BOB, "PATH": "/usr/bin:/bin"}
    env.pop("ITINERANT_MCP_PORT", None)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "itinerant.cli.main", "mcp", "serve", "--stdio"],
        env=env,
    )
    async with session(system, ALICE) as mcp:
        alices = body(await mcp.call_tool("publish_request", {"request": trip()}))["saga_id"]
    async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp:
        await mcp.initialize()
        mine = body(await mcp.call_tool("publish_request", {"request": trip(), "wait_s": 120}))
        assert mine["status"] != "pending", mine
        saga = body(await mcp.call_tool("get_saga", {"saga_id": mine["saga_id"]}))
        assert saga["customer"] == "bob"
        assert "no saga" in error_text(await mcp.call_tool("get_saga", {"saga_id": alices}))
        assert "for operators" in error_text(await mcp.call_tool("list_approvals", {}))
