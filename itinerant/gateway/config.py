"""The gateway's settings.

Read from ``itinerant.settings.Settings`` (``ITINERANT_GATEWAY_*``, the callers' and operators'
tokens; docs/security-gateway.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from itinerant.errors import NonRetryableError
from itinerant.security import tokens
from itinerant.security.tokens import TokenTable
from itinerant.settings import Settings

SERVICE = "gateway"
SOURCE = "/itinerant/gateway"
#: The key of the gateway's own fields in A2A metadata (requests, messages, tasks, events).
METADATA_KEY = "itinerant"
_WILDCARD = ("0.0.0.0", "::", "")


class GatewayExposed(NonRetryableError):
    """Bound to a non-loopback address without any token: refused at start."""

    reason = "gateway_exposed"
    hint = (
        'set ITINERANT_GATEWAY_TOKENS (JSON {"principal": "<token>"}) or '
        "ITINERANT_GATEWAY_TOKEN, or bind loopback (ITINERANT_GATEWAY_HOST=127.0.0.1); see "
        "docs/security-gateway.md"
    )


@dataclass(frozen=True)
class GatewayConfig:
    host: str
    port: int
    max_body_bytes: int
    public_url: str
    coordinator_url: str
    #: Callers' and operators' tokens; empty: every caller is principal ``default`` (loopback).
    tokens: TokenTable = field(default_factory=lambda: TokenTable([], ()))
    #: Sent to the coordinator's saga view (an operator's token).
    view_token: SecretStr | None = None
    rate_per_s: float = 20.0
    rate_burst: int = 40
    max_streams: int = 8

    @property
    def rpc_url(self) -> str:
        return self.public_url

    @property
    def authenticated(self) -> bool:
        return bool(self.tokens)

    def check_exposure(self) -> None:
        """Raise :class:`GatewayExposed` when bound beyond loopback with no token."""
        if not self.authenticated and not tokens.is_loopback(self.host):
            raise GatewayExposed(
                f"the A2A gateway would listen on {self.host}, beyond this machine, with no "
                "token: anyone could start and read tasks"
            )


def _shown(host: str) -> str:
    return "127.0.0.1" if host in _WILDCARD else host


def gateway_config(settings: Settings, **overrides: Any) -> GatewayConfig:
    """The gateway's configuration, from ``Settings``; ``overrides`` replace settings fields
    (``gateway_port=...``, ``gateway_token=...``)."""
    if overrides:
        settings = settings.model_copy(update=_secrets(overrides))
    host = settings.gateway_host
    port = settings.gateway_port
    return GatewayConfig(
        host=host,
        port=port,
        max_body_bytes=settings.gateway_max_body_bytes,
        public_url=str(settings.gateway_public_url or f"http://{_shown(host)}:{port}/"),
        coordinator_url=(
            f"http://{_shown(settings.coordinator_http_host)}:{settings.coordinator_http_port}"
        ),
        tokens=tokens.gateway_table(settings),
        view_token=tokens.operator_token(settings),
        rate_per_s=settings.gateway_rate_per_s,
        rate_burst=settings.gateway_rate_burst,
        max_streams=settings.gateway_max_streams,
    )


def _secrets(overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(overrides)
    token = out.get("gateway_token")
    if isinstance(token, str):
        out["gateway_token"] = SecretStr(token)
    found = out.get("gateway_tokens")
    if isinstance(found, dict):
        out["gateway_tokens"] = {
            k: v if isinstance(v, SecretStr) else SecretStr(v) for k, v in found.items()
        }
    found = out.get("operator_tokens")
    if isinstance(found, dict):
        out["operator_tokens"] = {
            k: v if isinstance(v, SecretStr) else SecretStr(v) for k, v in found.items()
        }
    return out
