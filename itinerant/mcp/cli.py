"""``itinerant mcp serve``: the mesh as an MCP server on its own (docs/mcp.md#running-it)."""

from __future__ import annotations

from typing import Annotated

import typer

from itinerant.cli.context import cli_settings, fail
from itinerant.errors import ItinerantError
from itinerant.observability.logs import configure_logging

mcp_app = typer.Typer(help="The mesh as an MCP server (docs/mcp.md).", no_args_is_help=True)


@mcp_app.command("serve")
def serve(
    stdio: Annotated[
        bool,
        typer.Option(
            "--stdio",
            help="speak MCP on stdin/stdout for one assistant, as ITINERANT_MCP_TOKEN's "
            "principal (logs go to stderr)",
        ),
    ] = False,
    port: Annotated[
        int | None, typer.Option(help="HTTP port (default ITINERANT_MCP_PORT)", min=1, max=65535)
    ] = None,
) -> None:
    """Serve the mesh's MCP tools: streamable HTTP at /mcp (bearer tokens of the gateway), or
    stdio with --stdio."""
    from .app import SERVICE, main

    settings = cli_settings()
    if port is not None:
        settings = settings.model_copy(update={"mcp_port": port})
    configure_logging(SERVICE, settings.log_level)
    try:
        main(settings, stdio=stdio)
    except ItinerantError as exc:
        raise fail(exc.describe(), 2) from exc
