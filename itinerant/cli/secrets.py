"""``itinerant secrets init``: the keys and tokens of a mesh whose services run apart (one
container each), generated once into a shared folder, as `itinerant up` does for a local mesh
(docs/security.md#a-mesh-in-containers)."""

from __future__ import annotations

import typer
from rich.console import Console

from itinerant.errors import ItinerantError
from itinerant.security.keys import keys_dir
from itinerant.security.local import mesh_principals, prepare
from itinerant.security.tokens import tokens_path

from .context import cli_settings, fail

secrets_app = typer.Typer(
    help="The mesh's signing keys and callers' tokens (generated when missing, never printed).",
    no_args_is_help=True,
)
console = Console()


@secrets_app.command("init")
def init() -> None:
    """Generate the keys every principal of the mesh signs with and the callers' and operators'
    tokens, where ITINERANT_KEYS_DIR and ITINERANT_TOKENS_FILE say (kept when present)."""
    settings = cli_settings()
    try:
        prepare(settings, settings.service_names())
    except (ItinerantError, OSError) as exc:
        text = exc.describe() if isinstance(exc, ItinerantError) else str(exc)
        raise fail(
            f"{text}; check that the folders exist and are writable by this user", 2
        ) from exc
    where = keys_dir(settings)
    if settings.message_signing == "required":
        console.print(f"keys of {', '.join(mesh_principals(settings))} in {where} (0600)")
    else:
        console.print("message signing is off (ITINERANT_MESSAGE_SIGNING): no keys generated")
    console.print(f"tokens in {tokens_path(settings)} (0600): read them there, they are not shown")
