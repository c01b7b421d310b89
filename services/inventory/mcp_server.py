"""The travel inventory as an MCP server (docs/mcp.md#the-inventory-mcp-server).

Two read-only tools over the catalogue, on the ``mcp`` SDK's ``MCPServer``:
``search_flights(origin, destination)`` and ``search_hotels(city)``. Cities are codes or names
("LIS" or "Lisbon"). Runs over stdio (``python -m services.inventory.mcp_server --stdio``) or
streamable HTTP at ``/mcp`` (``--port``, default 8791).

No ``from __future__ import annotations`` here: the SDK builds each tool's input schema from
the annotations.
"""

import argparse
import asyncio
import logging
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from itinerant.settings import Settings
from services.inventory import catalogue
from services.settings import travel_settings

NAME = "inventory"
PATH = "/mcp"
DEFAULT_PORT = 8791

City = Annotated[
    str, Field(min_length=1, max_length=64, description="a city code (LIS) or name (Lisbon)")
]


def _code(city: str) -> str:
    code = catalogue().city_code(city)
    if code is None:
        known = ", ".join(sorted(catalogue().cities))
        raise ToolError(f"unknown city {city!r}: use one of {known} (or its name)")
    return code


def search_flights(origin: City, destination: City) -> dict[str, Any]:
    """Flights from ``origin`` to ``destination`` (none when the route is not flown)."""
    src, dst = _code(origin), _code(destination)
    flight = catalogue().flight_on_route(src, dst)
    return {
        "origin": src,
        "destination": dst,
        "flights": [] if flight is None else [asdict(flight)],
    }


def search_hotels(city: City) -> dict[str, Any]:
    """Hotels in ``city``, cheapest first."""
    code = _code(city)
    return {"city": code, "hotels": [asdict(h) for h in catalogue().hotels_in(code)]}


def build_server() -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        NAME,
        title="Travel inventory",
        instructions="Search the travel catalogue: search_flights by route, search_hotels by city.",
        log_level="WARNING",
    )
    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False, idempotent_hint=True)
    server.add_tool(search_flights, name="search_flights", annotations=read_only)
    server.add_tool(search_hotels, name="search_hotels", annotations=read_only)
    return server


def http_app(host: str = "127.0.0.1") -> Any:
    """The streamable HTTP app at ``/mcp``."""
    return build_server().streamable_http_app(streamable_http_path=PATH, host=host)


async def serve_http(host: str, port: int, ready: Path | None) -> None:
    from itinerant.gateway.app import serve_until_stopped

    url = f"http://{host}:{port}{PATH}"
    await serve_until_stopped(
        http_app(host),
        host=host,
        port=port,
        ready=ready or Path(tempfile.gettempdir()) / f"itinerant-inventory-mcp-{port}.ready",
        url=url,
        what="inventory MCP server",
        port_setting="--port",
    )


SERVICE = "inventory-mcp"


def inventory_url(port: int) -> str:
    return f"http://127.0.0.1:{port}{PATH}"


def serve(settings: Settings) -> None:
    """Service ``inventory-mcp`` of `itinerant up`: HTTP on ITINERANT_INVENTORY_MCP_PORT, ready
    when ``<data dir>/run/inventory-mcp.ready`` holds the URL."""
    port = travel_settings().inventory_mcp_port or DEFAULT_PORT
    ready = settings.data_dir / "run" / f"{SERVICE}.ready"
    asyncio.run(serve_http("127.0.0.1", port, ready))


def side_servers() -> dict[str, Callable[[Settings], None]]:
    """The mesh's side servers: this one when ITINERANT_INVENTORY_MCP_PORT is set."""
    return {SERVICE: serve} if travel_settings().inventory_mcp_port else {}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdio", action="store_true", help="serve MCP on stdin/stdout")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--ready", type=Path, default=None, help="file holding the URL when up")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.stdio:
        asyncio.run(build_server().run_stdio_async())
    else:
        asyncio.run(serve_http(args.host, args.port, args.ready))


if __name__ == "__main__":
    main()
