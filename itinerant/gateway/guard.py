"""What the gateway checks before any JSON-RPC handling (docs/security-gateway.md): the caller's
bearer token (HTTP 401), its request rate and open streams (HTTP 429 with Retry-After), and the
body size (HTTP 413). The principal is handed on to the handler in the ASGI scope."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.routes.common import DefaultServerCallContextBuilder
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from starlette.requests import Request

from itinerant.security.tokens import DEFAULT_PRINCIPAL, Principal

from .config import GatewayConfig
from .limits import RateLimiter, StreamSlots, retry_after

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Where A2A 0.3's first clients looked for the card (served there too).
PREV_AGENT_CARD_WELL_KNOWN_PATH = "/.well-known/agent.json"
JWKS_PATH = "/.well-known/jwks.json"
PUBLIC_PATHS = frozenset({AGENT_CARD_WELL_KNOWN_PATH, PREV_AGENT_CARD_WELL_KNOWN_PATH, JWKS_PATH})
#: The per-agent cards, ``/agents/<name>/.well-known/agent-card.json``, are public too.
AGENTS_PREFIX = "/agents/"
STREAMING_METHODS = frozenset(
    {"SendStreamingMessage", "SubscribeToTask", "message/stream", "tasks/resubscribe"}
)
#: Where the guard leaves the caller's principal in the ASGI scope (and the call context).
PRINCIPAL_KEY = "itinerant.principal"
STREAM_RETRY_S = 5.0
UNAUTHORIZED = (
    "unauthorized: send 'Authorization: Bearer <token>' (the agent card's 'bearer' security "
    "scheme); `itinerant up` prints where a local mesh's token is"
)


def public(path: str) -> bool:
    """Whether ``path`` is served without a token (the cards and the key that signs them)."""
    return path in PUBLIC_PATHS or (
        path.startswith(AGENTS_PREFIX) and path.endswith(AGENT_CARD_WELL_KNOWN_PATH)
    )


def rpc_error(code: int, message: str, request_id: str | int | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class Guard:
    """Token, rate, body size and stream cap, in that order. The agent card stays public
    (clients discover the security scheme from it). A body is read at most ``max_body_bytes``
    far, whether or not it declares a Content-Length."""

    def __init__(self, app: ASGIApp, config: GatewayConfig) -> None:
        self.app = app
        self.config = config
        self.rates = RateLimiter(config.rate_per_s, config.rate_burst)
        self.streams = StreamSlots(config.max_streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] in ("GET", "HEAD") and public(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        principal = self._principal(headers)
        if principal is None:
            await respond(
                send,
                401,
                rpc_error(-32600, UNAUTHORIZED),
                [(b"www-authenticate", b'Bearer realm="itinerant"')],
            )
            return
        wait = self.rates.take(principal.name)
        if wait > 0:
            await _too_many(
                send,
                wait,
                f"rate limit: principal {principal.name!r} may send "
                f"{self.config.rate_per_s:g} requests per second (bursts of "
                f"{self.config.rate_burst}); retry after the Retry-After seconds",
            )
            return
        body = await self._body(headers, receive, send)
        if body is None:
            return
        scope[PRINCIPAL_KEY] = principal
        streaming = _method(body) in STREAMING_METHODS
        if streaming and not self.streams.acquire(principal.name):
            await _too_many(
                send,
                STREAM_RETRY_S,
                f"principal {principal.name!r} has {self.config.max_streams} open streams, the "
                "limit (ITINERANT_GATEWAY_MAX_STREAMS); close one, or poll GetTask",
            )
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        try:
            await self.app(scope, replay, send)
        finally:
            if streaming:
                self.streams.release(principal.name)

    def _principal(self, headers: dict[str, str]) -> Principal | None:
        if not self.config.authenticated:  # loopback only (GatewayConfig.check_exposure)
            return Principal(DEFAULT_PRINCIPAL)
        return self.config.tokens.identify_header(headers.get("authorization", ""))

    async def _body(self, headers: dict[str, str], receive: Receive, send: Send) -> bytes | None:
        limit = self.config.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, int(declared), limit)
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, size, limit)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _method(body: bytes) -> str | None:
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    method = parsed.get("method") if isinstance(parsed, dict) else None
    return method if isinstance(method, str) else None


class PrincipalContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context, with the principal the guard identified in its state."""

    def build(self, request: Request) -> ServerCallContext:
        context = super().build(request)
        context.state[PRINCIPAL_KEY] = request.scope.get(PRINCIPAL_KEY)
        context.state.get("headers", {}).pop("authorization", None)
        return context


async def _too_large(send: Send, size: int, limit: int) -> None:
    await respond(
        send,
        413,
        rpc_error(
            -32600,
            f"request body too large: {size}+ bytes; the limit is {limit} "
            "(ITINERANT_GATEWAY_MAX_BODY_BYTES)",
        ),
    )


async def _too_many(send: Send, wait_s: float, message: str) -> None:
    await respond(
        send, 429, rpc_error(-32600, message), [(b"retry-after", retry_after(wait_s).encode())]
    )


async def respond(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    raw = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
