"""The MCP server's tools (docs/mcp.md#tools), on the ``mcp`` SDK's ``MCPServer``.

Each tool finds its caller's principal first (the bearer token of the HTTP request, or the one
principal a stdio server acts for), then hands the work to :class:`.operations.MeshOperations`.
A refusal (bad input, not allowed, no such saga) or an unavailable mesh is a tool error whose
text says what to do; the session goes on.

No ``from __future__ import annotations`` here: the SDK builds each tool's input schema from the
annotations, and ``publish_request``'s ``request`` is the mesh's own request model, set when the
server is built.
"""

import logging
from collections.abc import Callable
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from itinerant.errors import ItinerantError
from itinerant.security.tokens import Principal, TokenTable

from .operations import DeadLetterStatus, MeshOperations

log = logging.getLogger(__name__)

NAME = "itinerant"
#: Who a tool call is from: the principal of the call's context.
Identify = Callable[[Context], Principal]

INSTRUCTIONS = (
    "Drive and operate an Itinerant mesh: publish_request starts a saga (a request of the mesh's "
    "request model) and can wait for its result; get_saga reads a saga's state, steps and "
    "timeline. Operators also have list_dead_letters and list_approvals. You see only the "
    "sagas your token's principal started; operators see all."
)


def token_identity(table: TokenTable) -> Identify:
    """The principal of the request's ``Authorization: Bearer`` header (the HTTP guard has
    already refused a request without a known one)."""

    def identify(ctx: Context) -> Principal:
        headers = ctx.headers or {}
        found = table.identify_header(headers.get("authorization", ""))
        if found is None:
            raise ToolError("unauthorized: send 'Authorization: Bearer <token>'")
        return found

    return identify


def fixed_identity(principal: Principal) -> Identify:
    """Every call is from ``principal`` (a stdio server: one assistant, one token)."""
    return lambda _ctx: principal


async def _run(what: str, call: Any) -> dict[str, Any]:
    try:
        result: dict[str, Any] = await call
    except ItinerantError as exc:
        log.info("MCP tool %s refused: %s", what, exc.reason)
        raise ToolError(exc.describe()) from exc
    return result


WaitS = Annotated[
    float,
    Field(
        ge=0,
        description="seconds to wait for the result (0: return at once; capped by the "
        "server's ITINERANT_MCP_MAX_WAIT_S)",
    ),
]
SagaId = Annotated[str, Field(min_length=1, max_length=200, description="the saga's id")]
Limit = Annotated[int, Field(ge=1, le=1000, description="at most this many rows")]
Status = Annotated[
    DeadLetterStatus | None,
    Field(description="pending (default), replayed, discarded, or null for every entry"),
]


def build_server(operations: MeshOperations, identify: Identify) -> MCPServer[Any]:
    """The MCP server with the mesh's four tools."""
    mesh = operations.mesh
    server: MCPServer[Any] = MCPServer(
        NAME,
        title=f"Itinerant mesh {mesh.name!r}",
        instructions=INSTRUCTIONS,
        log_level="WARNING",
    )

    async def publish_request(request: Any, ctx: Context, wait_s: WaitS = 0.0) -> dict[str, Any]:
        principal = identify(ctx)
        raw = request.model_dump(exclude_none=True)
        return await _run(
            "publish_request", operations.publish_request(principal, raw, wait_s=wait_s)
        )

    publish_request.__annotations__["request"] = mesh.request_model

    async def get_saga(saga_id: SagaId, ctx: Context) -> dict[str, Any]:
        return await _run("get_saga", operations.get_saga(identify(ctx), saga_id))

    async def list_dead_letters(
        ctx: Context, status: Status = "pending", limit: Limit = 50
    ) -> dict[str, Any]:
        return await _run(
            "list_dead_letters",
            operations.list_dead_letters(identify(ctx), status=status, limit=limit),
        )

    async def list_approvals(ctx: Context, limit: Limit = 100) -> dict[str, Any]:
        return await _run("list_approvals", operations.list_approvals(identify(ctx), limit))

    read_only = ToolAnnotations(read_only_hint=True, open_world_hint=False)
    server.add_tool(
        publish_request,
        description=(
            f"Start a saga of the mesh {mesh.name!r}: `request` is the mesh's request (its "
            "schema below; `request_id` is your id for it: the same id is the same saga), "
            "published for you. With wait_s > 0 waits that long for the result. Returns "
            "saga_id, status (pending until a result) and the result when there is one."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False
        ),
    )
    server.add_tool(
        get_saga,
        description="A saga you started (operators: any saga): its state, steps with timings, "
        "timeline, and its result once there is one.",
        annotations=read_only,
    )
    server.add_tool(
        list_dead_letters,
        description="Operators only. Dead letters, newest first, with reason, service, error "
        "and what operators did to them (as `itinerant dlq list --json`).",
        annotations=read_only,
    )
    server.add_tool(
        list_approvals,
        description="Operators only. Sagas waiting for a human's approval, oldest first: "
        "amount, reasons, deadline and the step a decision would release.",
        annotations=read_only,
    )
    return server
