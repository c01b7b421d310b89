"""The gateway process: an A2A JSON-RPC server (a2a-sdk on Starlette, served by uvicorn).

Entry points: ``main(settings)`` (``itinerant worker gateway``) and ``python -m itinerant.gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn
from a2a.server.apps.jsonrpc.starlette_app import A2AStarletteApplication
from a2a.types import (
    InvalidRequestError,
    JSONParseError,
    MethodNotFoundError,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH, PREV_AGENT_CARD_WELL_KNOWN_PATH
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from itinerant.brokers.connection import require_broker
from itinerant.mesh import Mesh, load_mesh
from itinerant.observability import tracing
from itinerant.settings import Settings

from .card import agent_card
from .config import SERVICE, GatewayConfig, gateway_config
from .handler import GatewayHandler
from .mesh import Publisher, ResultsFollower, SagaView

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SUPPORTED_METHODS = (
    "message/send",
    "message/stream",
    "tasks/get",
    "tasks/cancel",
    "tasks/resubscribe",
)
PUBLIC_PATHS = frozenset({AGENT_CARD_WELL_KNOWN_PATH, PREV_AGENT_CARD_WELL_KNOWN_PATH})


def rpc_error(code: int, message: str, request_id: str | int | None = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


class Guard:
    """Bearer token (HTTP 401) and body size (HTTP 413) before any JSON-RPC handling.

    The agent card stays public (clients discover the security scheme from it). A body is read
    at most ``max_body_bytes`` far, whether or not it declares a Content-Length."""

    def __init__(self, app: ASGIApp, config: GatewayConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] in ("GET", "HEAD") and scope["path"] in PUBLIC_PATHS
        ):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.config.token is not None and not self._authorized(headers):
            await _respond(
                send,
                401,
                rpc_error(
                    -32600,
                    "unauthorized: send 'Authorization: Bearer <token>' (the agent card's "
                    "'bearer' security scheme; the token is ITINERANT_GATEWAY_TOKEN)",
                ),
                [(b"www-authenticate", b'Bearer realm="itinerant"')],
            )
            return
        limit = self.config.max_body_bytes
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(send, int(declared), limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _too_large(send, size, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, given = headers.get("authorization", "").partition(" ")
        token = self.config.token or ""
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        )


async def _too_large(send: Send, size: int, limit: int) -> None:
    await _respond(
        send,
        413,
        rpc_error(
            -32600,
            f"request body too large: {size}+ bytes; the limit is {limit} "
            "(ITINERANT_GATEWAY_MAX_BODY_BYTES)",
        ),
    )


async def _respond(
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


class GatewayApplication(A2AStarletteApplication):
    """The SDK's JSON-RPC application, with clearer answers to bodies that are not A2A."""

    async def _handle_requests(self, request: Request) -> Response:
        raw = await request.body()  # cached: the SDK's handler reads it again
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return _error(
                None,
                JSONParseError(
                    message=f"the body is not JSON ({exc}); send a JSON-RPC 2.0 request object"
                ),
            )
        if not isinstance(body, dict):
            return _error(
                None,
                InvalidRequestError(
                    message=f"the body must be a JSON-RPC 2.0 request object, not "
                    f"{type(body).__name__} (batches are not supported)"
                ),
            )
        request_id = body.get("id")
        request_id = request_id if isinstance(request_id, str | int) else None
        method = body.get("method")
        if isinstance(method, str) and method not in self.METHOD_TO_MODEL:
            return _error(
                request_id,
                MethodNotFoundError(
                    message=f"unknown method {method!r}; this agent speaks "
                    f"{', '.join(SUPPORTED_METHODS)}"
                ),
            )
        return await super()._handle_requests(request)


def _error(
    request_id: str | int | None, error: JSONParseError | InvalidRequestError | MethodNotFoundError
) -> JSONResponse:
    return JSONResponse(
        {"jsonrpc": "2.0", "id": request_id, "error": error.model_dump(exclude_none=True)}
    )


@dataclass
class Gateway:
    """Everything the gateway process holds, so tests can build it in-process too."""

    settings: Settings
    config: GatewayConfig
    mesh: Mesh
    publisher: Publisher
    view: SagaView
    results: ResultsFollower
    app: Starlette


def build(
    settings: Settings,
    config: GatewayConfig | None = None,
    *,
    mesh: Mesh | None = None,
    publisher: Publisher | None = None,
    view: SagaView | None = None,
    results: ResultsFollower | None = None,
) -> Gateway:
    """The gateway's parts and its ASGI app (parts may be given, e.g. by tests); ``mesh``
    defaults to the application ``settings.app`` names."""
    config = config or gateway_config(settings)
    mesh = mesh or load_mesh(settings.app)
    publisher = publisher or Publisher(settings)
    view = view or SagaView(config)
    results = results or ResultsFollower(settings)
    handler = GatewayHandler(settings, config, mesh, publisher, view, results)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        results.start()
        try:
            yield
        finally:
            results.stop()
            await view.close()
            await asyncio.to_thread(publisher.close)

    a2a = GatewayApplication(
        agent_card=agent_card(config, mesh),
        http_handler=handler,
        max_content_length=config.max_body_bytes,
    )
    app = a2a.build(lifespan=lifespan, middleware=[Middleware(Guard, config=config)])
    return Gateway(settings, config, mesh, publisher, view, results, app)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after a graceful stop, which kills the process before
    our cleanup (ready file, trace export) runs; a signal here only means: stop, then return."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


async def serve(gateway: Gateway) -> None:
    """Serve until SIGINT/SIGTERM; ``<data_dir>/run/gateway.ready`` exists while serving."""
    config = gateway.config
    server = _Server(
        uvicorn.Config(
            gateway.app,
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    ready = gateway.settings.data_dir / "run" / f"{SERVICE}.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)

    async def mark_ready() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        ready.write_text(config.public_url)
        log.info("A2A gateway serving %s (card at %s)", config.public_url, PUBLIC_PATHS)

    marker = asyncio.create_task(mark_ready())
    try:
        await server.serve()
    finally:
        marker.cancel()
        ready.unlink(missing_ok=True)
    if not server.started:
        raise SystemExit(
            f"the A2A gateway could not listen on {config.host}:{config.port}; set "
            "ITINERANT_GATEWAY_PORT to a free port"
        )


def main(settings: Settings, mesh: Mesh | None = None) -> None:
    """Run the gateway in the foreground (what ``itinerant worker gateway`` calls) for ``mesh``,
    by default the application ``settings.app`` names (ITINERANT_APP)."""
    mesh = mesh or load_mesh(settings.app)  # before the broker: a wrong ITINERANT_APP says so
    require_broker(settings.kafka_bootstrap_servers, settings.broker_timeout_s)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per saga-view poll
    tracing.configure(SERVICE, settings.data_dir)
    try:
        asyncio.run(serve(build(settings, mesh=mesh)))
    finally:
        tracing.shutdown()
