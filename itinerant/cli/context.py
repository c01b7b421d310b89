"""The settings every command works with: from the environment, bound to the application that
ITINERANT_APP (or ``--app``) names, so topics and services are the mesh's."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from itinerant.brokers.broker_security import local_login
from itinerant.errors import ItinerantError
from itinerant.mesh import Mesh, mesh_and_settings
from itinerant.settings import Settings

from .terminal import safe

err = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/bold red] {safe(message, multiline=True)}")
    return typer.Exit(code)


def cli_mesh() -> tuple[Mesh, Settings]:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise fail(f"bad settings: {problems}", 2) from exc
    # On a local secure broker (ITINERANT_EMBEDDED_KAFKA_SECURITY) the CLI is the operator.
    settings = local_login(settings, settings.operator)
    try:
        return mesh_and_settings(settings)
    except ItinerantError as exc:
        raise fail(exc.describe(), 2) from exc


def cli_settings() -> Settings:
    return cli_mesh()[1]
