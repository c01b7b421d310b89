"""The gateway's settings.

The proposed fields of ``services.runtime.settings.Settings`` (``gateway_host``, ``gateway_port``,
``gateway_token``, ``gateway_max_body_bytes``) are read from it when it has them, else from the
same ``ITINERANT_GATEWAY_*`` environment variables through :class:`GatewaySettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.settings import Settings

SERVICE = "gateway"
SOURCE = "/itinerant/gateway"


class GatewaySettings(BaseSettings):
    """``ITINERANT_GATEWAY_*`` (the same names and defaults as proposed for ``Settings``)."""

    model_config = SettingsConfigDict(env_prefix="ITINERANT_", extra="ignore")

    gateway_host: str = Field(default="127.0.0.1", description="Address the A2A gateway binds.")
    gateway_port: int = Field(default=8480, ge=0, le=65535, description="A2A gateway HTTP port.")
    gateway_token: SecretStr | None = Field(
        default=None, description="Bearer token A2A clients must send (unset: no auth)."
    )
    gateway_max_body_bytes: int = Field(
        default=262_144, ge=1024, description="Largest A2A request body (HTTP 413 beyond)."
    )
    gateway_public_url: str | None = Field(
        default=None, description="URL in the agent card (default http://<host>:<port>/)."
    )


@dataclass(frozen=True)
class GatewayConfig:
    host: str
    port: int
    token: str | None
    max_body_bytes: int
    public_url: str
    coordinator_url: str
    poll_interval_s: float = 0.2

    @property
    def rpc_url(self) -> str:
        return self.public_url


_FIELDS = ("gateway_host", "gateway_port", "gateway_token", "gateway_max_body_bytes")


def gateway_config(settings: Settings, **overrides: Any) -> GatewayConfig:
    """The gateway's configuration: ``Settings`` fields when present, else the environment."""
    env = GatewaySettings()
    values: dict[str, Any] = {name: getattr(env, name) for name in _FIELDS}
    for name in _FIELDS:
        if name in type(settings).model_fields:
            values[name] = getattr(settings, name)
    values.update(overrides)
    token = values["gateway_token"]
    if isinstance(token, SecretStr):
        token = token.get_secret_value()
    host = str(values["gateway_host"])
    port = int(values["gateway_port"])
    public = values.get("gateway_public_url") or env.gateway_public_url
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    coordinator_host = (
        "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "::", "") else settings.metrics_host
    )
    return GatewayConfig(
        host=host,
        port=port,
        token=token or None,
        max_body_bytes=int(values["gateway_max_body_bytes"]),
        public_url=str(public or f"http://{shown_host}:{port}/"),
        coordinator_url=f"http://{coordinator_host}:{settings.coordinator_http_port}",
    )
