"""The gateway's settings.

Read from ``itinerant.settings.Settings`` (``ITINERANT_GATEWAY_*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from itinerant.settings import Settings

SERVICE = "gateway"
SOURCE = "/itinerant/gateway"
#: The key of the gateway's own fields in A2A metadata (requests, messages, tasks, events).
METADATA_KEY = "itinerant"


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


def gateway_config(settings: Settings, **overrides: Any) -> GatewayConfig:
    """The gateway's configuration, from ``Settings`` (``ITINERANT_GATEWAY_*``)."""
    values: dict[str, Any] = {
        "gateway_host": settings.gateway_host,
        "gateway_port": settings.gateway_port,
        "gateway_token": settings.gateway_token,
        "gateway_max_body_bytes": settings.gateway_max_body_bytes,
        "gateway_public_url": settings.gateway_public_url,
    }
    values.update(overrides)
    token = values["gateway_token"]
    if isinstance(token, SecretStr):
        token = token.get_secret_value()
    host = str(values["gateway_host"])
    port = int(values["gateway_port"])
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    coordinator_host = (
        "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "::", "") else settings.metrics_host
    )
    return GatewayConfig(
        host=host,
        port=port,
        token=token or None,
        max_body_bytes=int(values["gateway_max_body_bytes"]),
        public_url=str(values["gateway_public_url"] or f"http://{shown_host}:{port}/"),
        coordinator_url=f"http://{coordinator_host}:{settings.coordinator_http_port}",
    )
