"""The gateway process: an A2A JSON-RPC server (a2a-sdk on Starlette, served by uvicorn).

Entry points: ``main(settings)`` (``itinerant worker gateway``) and ``python -m itinerant.gateway``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from a2a.server.apps.jsonrpc.starlette_app import A2AStarletteApplication
from a2a.types import (
    InvalidRequestError,
    JSONParseError,
    MethodNotFoundError,
)
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from itinerant.brokers.client_security import client_security
from itinerant.brokers.connection import require_broker
from itinerant.mesh import Mesh, load_mesh
from itinerant.observability import tracing
from itinerant.security.signing import require_signing_key
from itinerant.settings import Settings

from .card import agent_card
from .config import SERVICE, GatewayConfig, gateway_config
from .feed import MeshFeed
from .guard import Guard, PrincipalContextBuilder
from .handler import GatewayHandler
from .mesh import Publisher, SagaView

log = logging.getLogger(__name__)

SUPPORTED_METHODS = (
    "message/send",
    "message/stream",
    "tasks/get",
    "tasks/cancel",
    "tasks/resubscribe",
    "tasks/pushNotificationConfig/set",
    "tasks/pushNotificationConfig/get",
    "tasks/pushNotificationConfig/list",
    "tasks/pushNotificationConfig/delete",
)


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
    feed: MeshFeed
    app: Starlette
    handler: GatewayHandler


def build(
    settings: Settings,
    config: GatewayConfig | None = None,
    *,
    mesh: Mesh | None = None,
    publisher: Publisher | None = None,
    view: SagaView | None = None,
    feed: MeshFeed | None = None,
) -> Gateway:
    """The gateway's parts and its ASGI app (parts may be given, e.g. by tests); ``mesh``
    defaults to the application ``settings.app`` names. Raises
    :class:`~itinerant.gateway.config.GatewayExposed` for a non-loopback address without a
    token."""
    config = config or gateway_config(settings)
    config.check_exposure()
    if not config.authenticated:
        log.warning(
            "the A2A gateway has no token: every caller on this machine is principal 'default'"
        )
    mesh = mesh or load_mesh(settings.app)
    publisher = publisher or Publisher(settings)
    view = view or SagaView(config)
    feed = feed or MeshFeed(settings)
    handler = GatewayHandler(settings, config, mesh, publisher, view, feed)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        feed.start()
        try:
            yield
        finally:
            await handler.close()
            feed.stop()
            await view.close()
            await asyncio.to_thread(publisher.close)

    a2a = GatewayApplication(
        agent_card=agent_card(config, mesh),
        http_handler=handler,
        context_builder=PrincipalContextBuilder(),
        max_content_length=config.max_body_bytes,
    )
    app = a2a.build(lifespan=lifespan, middleware=[Middleware(Guard, config=config)])
    return Gateway(settings, config, mesh, publisher, view, feed, app, handler)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after a graceful stop, which kills the process before
    our cleanup (ready file, trace export) runs; a signal here only means: stop, then return."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


async def serve_until_stopped(
    app: Any, *, host: str, port: int, ready: Path, url: str, what: str, port_setting: str
) -> None:
    """Serve ``app`` with uvicorn until SIGINT/SIGTERM; ``ready`` holds ``url`` while serving
    (the gateway's and the MCP server's ready file). Exits naming ``port_setting`` when the
    port cannot be had."""
    server = _Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=5,
        )
    )
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.unlink(missing_ok=True)

    async def mark_ready() -> None:
        while not server.started:
            if server.should_exit:
                return
            await asyncio.sleep(0.05)
        ready.write_text(url)
        log.info("%s serving %s", what, url)

    marker = asyncio.create_task(mark_ready())
    try:
        await server.serve()
    finally:
        marker.cancel()
        ready.unlink(missing_ok=True)
    if not server.started:
        raise SystemExit(
            f"the {what} could not listen on {host}:{port}; set {port_setting} to a free port"
        )


async def serve(gateway: Gateway) -> None:
    """Serve until SIGINT/SIGTERM; ``<data_dir>/run/gateway.ready`` exists while serving."""
    config = gateway.config
    await serve_until_stopped(
        gateway.app,
        host=config.host,
        port=config.port,
        ready=gateway.settings.data_dir / "run" / f"{SERVICE}.ready",
        url=config.public_url,
        what="A2A gateway",
        port_setting="ITINERANT_GATEWAY_PORT",
    )


def main(settings: Settings, mesh: Mesh | None = None) -> None:
    """Run the gateway in the foreground (what ``itinerant worker gateway`` calls) for ``mesh``,
    by default the application ``settings.app`` names (ITINERANT_APP)."""
    mesh = mesh or load_mesh(settings.app)  # before the broker: a wrong ITINERANT_APP says so
    gateway_config(settings).check_exposure()
    require_signing_key(settings, SERVICE)
    require_broker(
        settings.kafka_bootstrap_servers, settings.broker_timeout_s, client_security(settings)
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per saga-view poll
    tracing.configure(SERVICE, settings.data_dir, settings.log_max_bytes, settings.log_keep)
    try:
        asyncio.run(serve(build(settings, mesh=mesh)))
    finally:
        tracing.shutdown()
