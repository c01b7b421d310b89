"""``itinerant agents``: what the mesh offers over A2A (the gateway's agent card)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import httpx
import typer
from a2a.client import A2ACardResolver
from a2a.client.errors import A2AClientError
from a2a.types import AgentCard
from rich.console import Console
from rich.table import Table

from itinerant.settings import Settings

from .config import gateway_config
from .proto import to_json


async def fetch_card(url: str, timeout_s: float = 5.0) -> AgentCard:
    async with httpx.AsyncClient(timeout=timeout_s) as http:
        return await A2ACardResolver(http, url).get_agent_card()


def agents(
    url: Annotated[
        str | None, typer.Option(help="gateway base URL (default: from the settings)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the card as JSON")] = False,
) -> None:
    """Show the mesh's A2A agent card (skills, modes, auth) as the gateway serves it."""
    base = url or gateway_config(Settings()).public_url
    try:
        card = asyncio.run(fetch_card(base))
    except (A2AClientError, httpx.HTTPError, OSError) as exc:
        Console(stderr=True).print(
            f"[bold red]error:[/bold red] no A2A gateway answers at {base} ({exc}); start it "
            "with 'itinerant up' (or 'itinerant worker gateway') or give --url"
        )
        raise typer.Exit(1) from exc
    if as_json:
        print(json.dumps(to_json(card), indent=2))
        return
    console = Console()
    auth = ", ".join(card.security_schemes) or "none"
    versions = ", ".join(i.protocol_version for i in card.supported_interfaces)
    url = card.supported_interfaces[0].url if card.supported_interfaces else "-"
    signed = "signed" if card.signatures else "unsigned"
    console.print(f"[bold]{card.name}[/bold] {card.version} (A2A {versions}; {signed})")
    console.print(f"url: {url}   streaming: {card.capabilities.streaming}   auth: {auth}")
    console.print(
        f"modes: in {list(card.default_input_modes)}, out {list(card.default_output_modes)}"
    )
    table = Table("skill", "name", "description")
    for skill in card.skills:
        table.add_row(skill.id, skill.name, skill.description)
    console.print(table)
