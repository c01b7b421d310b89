"""The MCP tools' rules without a broker (docs/mcp.md#auth): who sees which saga, operator-only
tools, input refused with what is wrong, the wait capped, and the HTTP guard's 401."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from itinerant.gateway.owners import task_id_for
from itinerant.mcp.guard import BearerGuard
from itinerant.mcp.operations import MeshOperations, ToolRefused
from itinerant.security.tokens import Principal, TokenTable
from itinerant.settings import Settings
from itinerant.wire.request import Request

ALICE = Principal("alice")
BOB = Principal("bob")
OPERATOR = Principal("operator", operator=True)


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    async def publish_request(self, request: Request, saga_id: str, customer: str) -> None:
        self.sent.append((saga_id, customer))


class View:
    def __init__(self) -> None:
        self.sagas: dict[str, dict[str, Any]] = {}

    async def get(self, saga_id: str) -> dict[str, Any] | None:
        return self.sagas.get(saga_id)

    async def recent(self, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        return [s for s in self.sagas.values() if state is None or s["state"] == state]


class Feed:
    def __init__(self) -> None:
        self.results: dict[str, dict[str, Any]] = {}
        self.waited: list[float] = []

    def get(self, saga_id: str) -> dict[str, Any] | None:
        return self.results.get(saga_id)

    async def wait(self, saga_id: str, timeout_s: float) -> dict[str, Any] | None:
        self.waited.append(timeout_s)
        return self.results.get(saga_id)


@pytest.fixture
def ops() -> MeshOperations:
    settings = Settings(mcp_max_wait_s=5)
    mesh = SimpleNamespace(name="unit", request_model=Request)  # what the tools read of a Mesh
    return MeshOperations(settings, mesh, Publisher(), View(), Feed())  # type: ignore[arg-type]


async def test_a_request_is_published_for_its_caller(ops: MeshOperations) -> None:
    answer = await ops.publish_request(ALICE, {"request_id": "r1"})
    assert answer["saga_id"] == task_id_for("alice", "r1")
    assert answer["status"] == "pending" and answer["published"] is True
    assert ops.publisher.sent == [(answer["saga_id"], "alice")]  # type: ignore[attr-defined]
    again = await ops.publish_request(ALICE, {"request_id": "r1"})
    assert again["published"] is False and len(ops.publisher.sent) == 1  # type: ignore[attr-defined]


async def test_the_wait_is_capped(ops: MeshOperations) -> None:
    await ops.publish_request(ALICE, {}, wait_s=3600)
    assert ops.feed.waited == [5]  # type: ignore[attr-defined]


async def test_invalid_input_says_what_is_wrong(ops: MeshOperations) -> None:
    with pytest.raises(ToolRefused, match="max_hops"):
        await ops.publish_request(ALICE, {"max_hops": 0})
    with pytest.raises(ToolRefused, match="wait_s"):
        await ops.publish_request(ALICE, {}, wait_s=-1)
    with pytest.raises(ToolRefused, match="limit"):
        await ops.list_approvals(OPERATOR, limit=0)


async def test_a_caller_sees_only_its_own_sagas(ops: MeshOperations) -> None:
    ops.view.sagas["s1"] = {"saga_id": "s1", "state": "completed", "customer": "alice"}  # type: ignore[attr-defined]
    assert (await ops.get_saga(ALICE, "s1"))["customer"] == "alice"
    assert (await ops.get_saga(OPERATOR, "s1"))["customer"] == "alice"
    with pytest.raises(ToolRefused, match="no saga"):
        await ops.get_saga(BOB, "s1")
    with pytest.raises(ToolRefused, match="no saga"):
        await ops.get_saga(ALICE, "unknown")


async def test_another_callers_request_id_cannot_be_taken(ops: MeshOperations) -> None:
    saga_id = task_id_for("bob", "r9")
    ops.view.sagas[saga_id] = {"saga_id": saga_id, "state": "running", "customer": "alice"}  # type: ignore[attr-defined]
    with pytest.raises(ToolRefused, match="cannot be used"):
        await ops.publish_request(BOB, {"request_id": "r9"})


async def test_operator_tools_refuse_callers(ops: MeshOperations) -> None:
    with pytest.raises(ToolRefused, match="for operators"):
        await ops.list_approvals(ALICE)
    with pytest.raises(ToolRefused, match="for operators"):
        await ops.list_dead_letters(BOB)
    ops.view.sagas["h"] = {"saga_id": "h", "state": "awaiting_approval", "approval": {}}  # type: ignore[attr-defined]
    listed = await ops.list_approvals(OPERATOR)
    assert [a["saga_id"] for a in listed["approvals"]] == ["h"]


async def test_the_guard_answers_401_without_a_known_token() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"in"})

    token = "alice-unit-token-0123456789"
    guard = BearerGuard(inner, TokenTable([("alice", SecretStr(token))], ()))
    transport = httpx.ASGITransport(app=guard)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        none = await http.post("/mcp")
        wrong = await http.post("/mcp", headers={"Authorization": "Bearer nope-nope-nope-nope"})
        right = await http.post("/mcp", headers={"Authorization": f"Bearer {token}"})
        health = await http.get("/healthz")
    assert none.status_code == 401 and "Bearer" in none.headers["www-authenticate"]
    assert wrong.status_code == 401
    assert right.status_code == 200 and right.text == "in"
    assert health.status_code == 200
