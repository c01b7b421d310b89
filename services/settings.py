"""The travel mesh's own settings, read from the same environment as the framework's
(``ITINERANT_*``), so `itinerant up` hands them to every service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TravelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ITINERANT_", extra="ignore")

    approval_threshold_usd: float = Field(
        default=5000.0,
        ge=0,
        description="Trips and refunds above this amount wait for a human approval.",
    )
    parallel_search: bool = Field(
        default=True,
        description="Trip flow searches flights and hotels in parallel (false: in turn).",
    )
    max_replans: int = Field(
        default=2, ge=0, description="Re-plans after the validator rejects an LLM's facts."
    )
    inventory_mcp_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="The inventory MCP server's port: `up` starts it (service inventory-mcp) "
        "and flights and hotels search through it (0: they read the catalogue in process).",
    )
    fault_inventory_rate: float = Field(
        default=0.0, ge=0, le=1, description="Chaos testing: share of inventory calls that fail."
    )


@lru_cache(maxsize=1)
def travel_settings() -> TravelSettings:
    return TravelSettings()
