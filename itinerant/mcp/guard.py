"""The MCP server's door (docs/mcp.md#auth): every HTTP request needs a bearer token the
gateway knows (a caller's or an operator's, ``tokens.gateway_table``); without one the answer is
HTTP 401 before the SDK sees the request. ``/healthz`` is open."""

from __future__ import annotations

from itinerant.gateway.guard import ASGIApp, Receive, Scope, Send, respond
from itinerant.security.tokens import TokenTable

HEALTH_PATH = "/healthz"
UNAUTHORIZED = (
    "unauthorized: send 'Authorization: Bearer <token>' with a token of the gateway's callers "
    "or operators (ITINERANT_GATEWAY_TOKENS, ITINERANT_OPERATOR_TOKENS; `itinerant up` writes a "
    "local mesh's into <data dir>/tokens.json)"
)


class BearerGuard:
    """ASGI middleware: 401 for an HTTP request without a known token."""

    def __init__(self, app: ASGIApp, tokens: TokenTable) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("path") == HEALTH_PATH:
            await respond(send, 200, {"ok": True})
            return
        authorization = ""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                authorization = value.decode("latin-1")
        if self.tokens.identify_header(authorization) is None:
            await respond(
                send,
                401,
                {"error": UNAUTHORIZED},
                [(b"www-authenticate", b'Bearer realm="itinerant"')],
            )
            return
        await self.app(scope, receive, send)
