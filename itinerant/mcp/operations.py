"""What the MCP tools do, for one principal (docs/mcp.md#tools): publish a request and wait for
its result, read a saga, list dead letters and pending approvals.

The same code paths as the gateway and the CLI: requests are published by the gateway's
:class:`~itinerant.gateway.mesh.Publisher` (signed as the delegate ``gateway``, the caller named
in ``ce_customer``), results come from its :class:`~itinerant.gateway.feed.MeshFeed`, sagas from
the coordinator's view with the operator's token, dead letters from the CLI's snapshot of the
dead-letter topics. A caller sees only its own sagas; one it may not see is, to it, a saga that
does not exist. Operators see every saga and the operator tools.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import ValidationError

from itinerant.cli.approvals import summary as approval_summary
from itinerant.cli.dlq_io import read_snapshot
from itinerant.errors import BrokerUnavailable, NonRetryableError, validation_problems
from itinerant.gateway.feed import MeshFeed
from itinerant.gateway.mesh import CoordinatorUnavailable, Publisher, SagaView
from itinerant.gateway.owners import Owners, may_see, task_id_for
from itinerant.mesh import Mesh
from itinerant.operators.dlq_view import filter_views
from itinerant.security.tokens import Principal
from itinerant.settings import Settings
from itinerant.wire.ids import new_id

DeadLetterStatus = Literal["pending", "replayed", "discarded"]
MAX_LIST = 1000
DLQ_READ_S = 10.0


class ToolRefused(NonRetryableError):
    """A tool call the caller can correct (bad input, not allowed, no such saga)."""

    reason = "tool_refused"


class MeshUnavailable(NonRetryableError):
    """The broker or the coordinator's view did not answer; the call may be repeated later."""

    reason = "mesh_unavailable"


def _no_saga(saga_id: str) -> ToolRefused:
    return ToolRefused(
        f"no saga {saga_id!r} that you may see (not started yet, another caller's, or a typo)"
    )


class MeshOperations:
    """The tools' work, shared by every MCP session of one server process."""

    def __init__(
        self,
        settings: Settings,
        mesh: Mesh,
        publisher: Publisher,
        view: SagaView,
        feed: MeshFeed,
        owners: Owners | None = None,
    ) -> None:
        self.settings = settings
        self.mesh = mesh
        self.publisher = publisher
        self.view = view
        self.feed = feed
        self.owners = owners or Owners()

    # -- callers ----------------------------------------------------------------------------

    async def publish_request(
        self, principal: Principal, request: dict[str, Any], wait_s: float = 0.0
    ) -> dict[str, Any]:
        """Validate ``request`` as the mesh's request model and publish it for ``principal``;
        with ``wait_s`` > 0, wait up to that long (at most ITINERANT_MCP_MAX_WAIT_S) for the
        result. The same ``request_id`` from the same caller is the same saga."""
        if wait_s < 0:
            raise ToolRefused("wait_s must be 0 (do not wait) or a positive number of seconds")
        try:
            body = self.mesh.request_model.model_validate(request)
        except ValidationError as exc:
            raise ToolRefused(
                f"not a valid {self.mesh.name} request: {validation_problems(exc, root='request')}"
                " (the tool's description names the fields; see schemas/ in the repository)"
            ) from exc
        if body.request_id is not None:
            saga_id = task_id_for(principal.name, body.request_id)
            known = self.owners.owner(saga_id)
            saga = None if known is not None else await self._saga(saga_id)
            if known is not None or saga is not None:
                if known not in (None, principal.name) or not may_see(
                    principal, self.owners, saga_id, saga, None
                ):
                    raise ToolRefused(
                        f"request_id {body.request_id!r} cannot be used; send another (or none)"
                    )
                return await self._answer(saga_id, published=False, wait_s=wait_s)
        else:
            saga_id = new_id()
        try:
            await self.publisher.publish_request(body, saga_id, principal.name)
        except BrokerUnavailable as exc:
            raise MeshUnavailable(f"the request was not published ({exc}); retry shortly") from exc
        self.owners.remember(saga_id, principal.name, saga_id)
        return await self._answer(saga_id, published=True, wait_s=wait_s)

    async def _answer(self, saga_id: str, *, published: bool, wait_s: float) -> dict[str, Any]:
        wait_s = min(wait_s, self.settings.mcp_max_wait_s)
        result = await self.feed.wait(saga_id, wait_s) if wait_s > 0 else self.feed.get(saga_id)
        answer: dict[str, Any] = {"saga_id": saga_id, "published": published}
        if result is not None:
            answer["status"] = result.get("status", "done")
            answer["result"] = result
        else:
            answer["status"] = "pending"
            answer["hint"] = "call get_saga with this saga_id to follow it"
        return answer

    async def get_saga(self, principal: Principal, saga_id: str) -> dict[str, Any]:
        """The saga's state, steps and timeline, if ``principal`` may see it."""
        saga_id = saga_id.strip()
        if not saga_id:
            raise ToolRefused("saga_id is empty; pass the id publish_request returned")
        saga = await self._saga(saga_id)
        result = self.feed.get(saga_id)
        if not may_see(principal, self.owners, saga_id, saga, result):
            raise _no_saga(saga_id)
        if saga is None:
            if self.owners.published(saga_id):
                return {"saga_id": saga_id, "state": "submitted", "result": result}
            raise _no_saga(saga_id)
        return {**saga, "result": result} if result is not None else saga

    # -- operators --------------------------------------------------------------------------

    def _operator(self, principal: Principal, tool: str) -> None:
        if not principal.operator:
            raise ToolRefused(
                f"{tool} is for operators; principal {principal.name!r} is not one "
                "(ITINERANT_OPERATORS names them)"
            )

    async def list_dead_letters(
        self,
        principal: Principal,
        status: DeadLetterStatus | None = "pending",
        limit: int = 50,
    ) -> dict[str, Any]:
        """Dead letters, newest first (what ``itinerant dlq list --json`` shows)."""
        self._operator(principal, "list_dead_letters")
        limit = _limit(limit)
        try:
            snapshot = await asyncio.to_thread(read_snapshot, self.settings, deadline_s=DLQ_READ_S)
        except BrokerUnavailable as exc:
            raise MeshUnavailable(f"the dead-letter topic could not be read ({exc})") from exc
        rows = filter_views(snapshot.views(), status=status)
        now = datetime.now(UTC)
        newest = sorted(rows, key=lambda v: v.entry.at or now, reverse=True)[:limit]
        return {"count": len(rows), "entries": [view.as_dict(now) for view in newest]}

    async def list_approvals(self, principal: Principal, limit: int = 100) -> dict[str, Any]:
        """Sagas waiting for a human's approval, oldest request first (``itinerant approvals
        list --json``)."""
        self._operator(principal, "list_approvals")
        limit = _limit(limit)
        try:
            sagas = await self.view.recent("awaiting_approval", MAX_LIST)
        except CoordinatorUnavailable as exc:
            raise MeshUnavailable(str(exc)) from exc
        held = sorted(
            (approval_summary(s) for s in sagas), key=lambda s: str(s.get("requested_at") or "")
        )
        return {"count": len(held), "approvals": held[:limit]}

    # -- reading the view -------------------------------------------------------------------

    async def _saga(self, saga_id: str) -> dict[str, Any] | None:
        try:
            return await self.view.get(saga_id)
        except CoordinatorUnavailable as exc:
            raise MeshUnavailable(str(exc)) from exc


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIST:
        raise ToolRefused(f"limit must be from 1 to {MAX_LIST}, not {limit}")
    return limit
