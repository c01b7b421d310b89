"""The MCP server process (docs/mcp.md): streamable HTTP at ``/mcp`` behind the bearer guard
(``itinerant worker mcp``, started by ``itinerant up`` when ITINERANT_MCP_PORT is set, or
``itinerant mcp serve``), or stdio for one assistant (``itinerant mcp serve --stdio``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import MCPServer

from itinerant.brokers.client_security import client_security
from itinerant.brokers.connection import require_broker
from itinerant.errors import NonRetryableError
from itinerant.gateway.app import serve_until_stopped
from itinerant.gateway.config import SERVICE as DELEGATE
from itinerant.gateway.config import gateway_config
from itinerant.gateway.feed import MeshFeed
from itinerant.gateway.mesh import Publisher, SagaView
from itinerant.mesh import Mesh, load_mesh
from itinerant.observability import tracing
from itinerant.security import tokens
from itinerant.security.signing import require_signing_key
from itinerant.security.tokens import Principal, TokenTable
from itinerant.settings import Settings

from .guard import BearerGuard
from .operations import MeshOperations
from .server import Identify, build_server, fixed_identity, token_identity

log = logging.getLogger(__name__)

SERVICE = "mcp"
PATH = "/mcp"


class McpConfigError(NonRetryableError):
    """The MCP server cannot start as configured; the text says what to set."""

    reason = "mcp_config"
    hint = "see docs/mcp.md"


@dataclass
class McpParts:
    """Everything an MCP server process holds (tests may build one in-process)."""

    settings: Settings
    operations: MeshOperations
    feed: MeshFeed
    publisher: Publisher
    view: SagaView

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The feed follows the results topic while the server serves."""
        self.feed.start()
        try:
            yield
        finally:
            self.feed.stop()
            await self.view.close()
            await asyncio.to_thread(self.publisher.close)


def parts(settings: Settings, mesh: Mesh | None = None) -> McpParts:
    mesh = mesh or load_mesh(settings.app)
    publisher = Publisher(settings)
    view = SagaView(gateway_config(settings))
    feed = MeshFeed(settings)
    operations = MeshOperations(settings, mesh, publisher, view, feed)
    return McpParts(settings, operations, feed, publisher, view)


def token_table(settings: Settings) -> TokenTable:
    """The gateway's tokens; the MCP server never runs without one."""
    table = tokens.gateway_table(settings)
    if not table:
        raise McpConfigError(
            "the MCP server has no token to check: set ITINERANT_GATEWAY_TOKENS / "
            "ITINERANT_OPERATOR_TOKENS, or start it with `itinerant up` (which generates them)"
        )
    return table


def http_app(server: MCPServer[Any], table: TokenTable, host: str) -> Any:
    """The SDK's streamable HTTP app at ``/mcp``, behind the bearer guard."""
    inner = server.streamable_http_app(streamable_http_path=PATH, host=host)
    return BearerGuard(inner, table)


def stdio_principal(settings: Settings, table: TokenTable) -> Principal:
    """Whom a stdio server acts for: ITINERANT_MCP_TOKEN's principal."""
    if settings.mcp_token is None or not settings.mcp_token.get_secret_value():
        raise McpConfigError(
            "set ITINERANT_MCP_TOKEN to the token the assistant acts with (a caller's from "
            "ITINERANT_GATEWAY_TOKENS or <data dir>/tokens.json, or an operator's)"
        )
    found = table.identify(settings.mcp_token.get_secret_value())
    if found is None:
        raise McpConfigError(
            "ITINERANT_MCP_TOKEN is not a token of the gateway's callers or operators"
        )
    return found


async def serve_http(settings: Settings, mcp_parts: McpParts, table: TokenTable) -> None:
    """Serve streamable HTTP until SIGINT/SIGTERM; ``<data_dir>/run/mcp.ready`` exists while
    serving."""
    identify: Identify = token_identity(table)
    app = http_app(build_server(mcp_parts.operations, identify), table, settings.mcp_host)
    ready = settings.data_dir / "run" / f"{SERVICE}.ready"
    async with mcp_parts.running():
        await serve_until_stopped(
            app,
            host=settings.mcp_host,
            port=settings.mcp_port,
            ready=ready,
            url=f"http://{settings.mcp_host}:{settings.mcp_port}{PATH}",
            what="MCP server",
            port_setting="ITINERANT_MCP_PORT",
        )


async def serve_stdio(mcp_parts: McpParts, principal: Principal) -> None:
    server = build_server(mcp_parts.operations, fixed_identity(principal))
    async with mcp_parts.running():
        await server.run_stdio_async()


def _prepare(settings: Settings) -> tuple[McpParts, TokenTable]:
    mesh = load_mesh(settings.app)
    table = token_table(settings)
    require_signing_key(settings, DELEGATE)
    require_broker(
        settings.kafka_bootstrap_servers, settings.broker_timeout_s, client_security(settings)
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return parts(settings, mesh), table


def main(settings: Settings, *, stdio: bool = False) -> None:
    """Run the MCP server in the foreground: HTTP on ITINERANT_MCP_HOST:ITINERANT_MCP_PORT, or
    stdio (logs on stderr; stdout is the protocol's)."""
    if not stdio and not settings.mcp_port:
        raise McpConfigError(
            "ITINERANT_MCP_PORT is 0: set it to the port to serve on (or pass --port)"
        )
    table = token_table(settings)
    principal = stdio_principal(settings, table) if stdio else None
    mcp_parts, table = _prepare(settings)
    tracing.configure(SERVICE, settings.data_dir, settings.log_max_bytes, settings.log_keep)
    try:
        if principal is not None:
            asyncio.run(serve_stdio(mcp_parts, principal))
        else:
            asyncio.run(serve_http(settings, mcp_parts, table))
    finally:
        tracing.shutdown()
