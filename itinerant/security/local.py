"""What `itinerant up` prepares before it starts a local mesh: the keys every service signs with
and the callers' tokens, generated under the data directory when none are configured (files
0600; see docs/security.md#a-local-mesh)."""

from __future__ import annotations

from itinerant.security.keys import ensure_local_keys, keys_dir
from itinerant.security.tokens import ensure_local_tokens
from itinerant.settings import Settings


def prepare(settings: Settings, services: list[str]) -> Settings:
    """The settings the services of a local mesh start with, secrets prepared."""
    settings = prepare_keys(settings, services)
    return prepare_tokens(settings)


def mesh_principals(settings: Settings) -> list[str]:
    """Every principal of a local mesh: its services, the gateway, operators and approvers."""
    names = [*settings.service_names(), "gateway", *settings.delegates]
    names += [*settings.operators, *settings.approvers, settings.operator]
    return list(dict.fromkeys(names))


def prepare_keys(settings: Settings, services: list[str]) -> Settings:
    """Generate the keys a local mesh lacks (kept across restarts), unless signing is off."""
    if settings.message_signing == "required":
        ensure_local_keys(keys_dir(settings), mesh_principals(settings))
    return settings


def prepare_tokens(settings: Settings) -> Settings:
    """The callers' and operators' tokens a local mesh lacks, generated into
    ``<data_dir>/tokens.json`` (0600) and kept across restarts (docs/security-gateway.md)."""
    return ensure_local_tokens(settings)
