"""The inventory MCP server (docs/mcp.md#the-inventory-mcp-server), driven by the mcp SDK's own
client over stdio and over streamable HTTP."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

STDIO = StdioServerParameters(
    command=sys.executable, args=["-m", "services.inventory.mcp_server", "--stdio"]
)


def body(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict), result
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(part, "text", "") for part in result.content)


async def test_over_stdio_the_tools_search_the_catalogue() -> None:
    async with stdio_client(STDIO) as (read, write), ClientSession(read, write) as mcp:
        await mcp.initialize()
        tools = {tool.name for tool in (await mcp.list_tools()).tools}
        assert tools == {"search_flights", "search_hotels"}
        flights = body(
            await mcp.call_tool("search_flights", {"origin": "AMS", "destination": "BER"})
        )
        assert [f["flight_no"] for f in flights["flights"]] == ["IT102"]
        hotels = body(await mcp.call_tool("search_hotels", {"city": "Lisbon"}))
        prices = [h["nightly_usd"] for h in hotels["hotels"]]
        assert hotels["city"] == "LIS" and prices and prices == sorted(prices)
        assert "unknown city" in error_text(await mcp.call_tool("search_hotels", {"city": "Xyz"}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    port, ready = _free_port(), tmp_path / "inventory.ready"
    command = [sys.executable, "-m", "services.inventory.mcp_server", "--port", str(port)]
    proc = subprocess.Popen([*command, "--ready", str(ready)])
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start within 20 s"
            time.sleep(0.05)
        yield ready.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


async def test_over_streamable_http_the_tools_search_the_catalogue(http_server: str) -> None:
    assert http_server.endswith("/mcp")
    async with (
        streamable_http_client(http_server) as (read, write),
        ClientSession(read, write) as mcp,
    ):
        await mcp.initialize()
        flights = body(
            await mcp.call_tool("search_flights", {"origin": "Paris", "destination": "AMS"})
        )
        assert flights["origin"] == "CDG" and flights["destination"] == "AMS"
        assert all(f["origin"] == "CDG" for f in flights["flights"])
        assert body(await mcp.call_tool("search_hotels", {"city": "BER"}))["hotels"]
