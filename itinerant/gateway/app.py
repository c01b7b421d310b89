"""The gateway process: an A2A 1.0 JSON-RPC server, serving A2A 0.3 clients too (a2a-sdk's
dispatcher and card routes on Starlette, served by uvicorn).

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
from urllib.parse import urlsplit

import uvicorn
from a2a.server.routes import create_agent_card_routes
from a2a.server.routes.jsonrpc_dispatcher import JsonRpcDispatcher
from a2a.types import AgentCard
from a2a.utils.constants import (
    AGENT_CARD_WELL_KNOWN_PATH,
    PROTOCOL_VERSION_0_3,
    PROTOCOL_VERSION_1_0,
    VERSION_HEADER,
)
from packaging.version import InvalidVersion, Version
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from itinerant.brokers.client_security import client_security
from itinerant.brokers.connection import require_broker
from itinerant.mesh import Mesh, load_mesh
from itinerant.observability import tracing
from itinerant.security.signing import require_signing_key
from itinerant.security.tokens import Principal
from itinerant.settings import Settings

from .card import agent_card, agent_cards, agent_path, extended_card
from .card_signing import CardSigner, card_signer
from .config import SERVICE, GatewayConfig, gateway_config
from .feed import MeshFeed
from .guard import JWKS_PATH, PREV_AGENT_CARD_WELL_KNOWN_PATH, Guard, PrincipalContextBuilder
from .handler import GatewayHandler
from .mesh import Publisher, SagaView

log = logging.getLogger(__name__)

METHODS_1_0 = tuple(JsonRpcDispatcher.METHOD_TO_MODEL)
#: A2A 0.3's names, served through the SDK's compat layer (docs/security-gateway.md).
METHODS_0_3 = (
    "message/send",
    "message/stream",
    "tasks/get",
    "tasks/cancel",
    "tasks/resubscribe",
    "tasks/pushNotificationConfig/set",
    "tasks/pushNotificationConfig/get",
    "tasks/pushNotificationConfig/list",
    "tasks/pushNotificationConfig/delete",
    "agent/getAuthenticatedExtendedCard",
)
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, VERSION_NOT_SUPPORTED = (
    -32700,
    -32600,
    -32601,
    -32009,
)


def _major(version: str) -> int | None:
    try:
        return Version(version).major
    except InvalidVersion:
        return None


class Endpoint:
    """The JSON-RPC endpoint: the SDK's dispatcher (A2A 1.0, and 0.3 through its compat layer),
    with clearer answers to bodies that are not A2A and to a missing or unknown ``A2A-Version``,
    and the version served in the ``A2A-Version`` response header."""

    def __init__(self, handler: GatewayHandler) -> None:
        self.dispatcher = JsonRpcDispatcher(
            request_handler=handler,
            context_builder=PrincipalContextBuilder(),
            enable_v0_3_compat=True,
        )

    async def handle(self, request: Request) -> Response:
        raw = await request.body()  # cached: the SDK's dispatcher reads it again
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            return _error(
                None,
                PARSE_ERROR,
                f"the body is not JSON ({exc}); send a JSON-RPC 2.0 request object",
            )
        if not isinstance(body, dict):
            return _error(
                None,
                INVALID_REQUEST,
                f"the body must be a JSON-RPC 2.0 request object, not {type(body).__name__} "
                "(batches are not supported)",
            )
        request_id = body.get("id")
        request_id = request_id if isinstance(request_id, str | int) else None
        method = body.get("method")
        asked = request.headers.get(VERSION_HEADER, "").strip()
        if isinstance(method, str) and method in METHODS_0_3:
            served = PROTOCOL_VERSION_0_3
        elif isinstance(method, str) and method in METHODS_1_0:
            served = PROTOCOL_VERSION_1_0
            if _major(asked) != 1:
                return _error(
                    request_id,
                    VERSION_NOT_SUPPORTED,
                    f"{method} is an A2A 1.0 method: send the header '{VERSION_HEADER}: "
                    f"{PROTOCOL_VERSION_1_0}'"
                    + (f" (not {asked!r})" if asked else "")
                    + f"; A2A 0.3 clients use the 0.3 method names ({', '.join(METHODS_0_3)})",
                )
        elif isinstance(method, str):
            return _error(
                request_id,
                METHOD_NOT_FOUND,
                f"unknown method {method!r}; this agent speaks A2A 1.0 ({', '.join(METHODS_1_0)})"
                f" and A2A 0.3 ({', '.join(METHODS_0_3)})",
            )
        else:
            served = PROTOCOL_VERSION_1_0
        response = await self.dispatcher.handle_requests(request)
        response.headers[VERSION_HEADER] = served
        return response


def _error(request_id: str | int | None, code: int, message: str) -> JSONResponse:
    return JSONResponse(
        {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}},
        headers={VERSION_HEADER: PROTOCOL_VERSION_1_0},
    )


def card_routes(config: GatewayConfig, mesh: Mesh, signer: CardSigner | None) -> list[BaseRoute]:
    """The mesh's card (also at A2A 0.3's old path), a card per agent, and the JWKS of the key
    that signs them (when the gateway has one)."""

    def signed(card: AgentCard) -> AgentCard:
        return signer.sign(card) if signer is not None else card

    mesh_card = signed(agent_card(config, mesh))
    routes: list[BaseRoute] = [
        *create_agent_card_routes(mesh_card, card_url=AGENT_CARD_WELL_KNOWN_PATH),
        *create_agent_card_routes(mesh_card, card_url=PREV_AGENT_CARD_WELL_KNOWN_PATH),
    ]
    for name, card in agent_cards(config, mesh).items():
        routes.extend(create_agent_card_routes(signed(card), card_url=agent_path(name)))
    if signer is not None:
        jwks = signer.jwks()

        async def keys(_request: Request) -> Response:
            return JSONResponse(jwks)

        routes.append(Route(JWKS_PATH, keys, methods=["GET"]))
    return routes


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
    signer = card_signer(settings, config.public_url)

    async def extended(principal: Principal) -> AgentCard:
        card = extended_card(config, mesh, principal)
        return signer.sign(card) if signer is not None else card

    handler = GatewayHandler(settings, config, mesh, publisher, view, feed, extended)

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

    routes = [
        Route(urlsplit(config.rpc_url).path or "/", Endpoint(handler).handle, methods=["POST"]),
        *card_routes(config, mesh, signer),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(Guard, config=config)])
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
