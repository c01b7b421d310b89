"""Searching the inventory from an agent's handler: through the inventory MCP server when
ITINERANT_INVENTORY_MCP_PORT is set (``ctx.call_tool``, docs/mcp.md#agents-calling-mcp-tools),
else from the catalogue in process. Both give the catalogue's own records."""

from __future__ import annotations

from itinerant.runtime.agent import Agent, HandlerContext
from services.inventory import Flight, Hotel, catalogue
from services.inventory.mcp_server import DEFAULT_PORT, inventory_url
from services.settings import travel_settings

SERVER = "inventory"


def declare(agent: Agent) -> None:
    """``agent`` uses the inventory MCP server (ITINERANT_MCP_TOOL_SERVERS may move it)."""
    agent.uses_mcp(SERVER, url=inventory_url(travel_settings().inventory_mcp_port or DEFAULT_PORT))


def through_mcp() -> bool:
    return bool(travel_settings().inventory_mcp_port)


async def flights(ctx: HandlerContext, origin: str, destination: str) -> list[Flight]:
    if not through_mcp():
        found = catalogue().flight_on_route(origin, destination)
        return [] if found is None else [found]
    answer = await ctx.call_tool(
        SERVER, "search_flights", {"origin": origin, "destination": destination}
    )
    return [Flight(**f) for f in answer["flights"]]


async def hotels(ctx: HandlerContext, city: str) -> list[Hotel]:
    if not through_mcp():
        return catalogue().hotels_in(city)
    answer = await ctx.call_tool(SERVER, "search_hotels", {"city": city})
    return [Hotel(**h) for h in answer["hotels"]]
