"""The coordinator's saga view (docs/security-gateway.md#the-coordinators-view): an operator's
token on every path but /healthz, a bounded ``limit``, loopback by default."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from itinerant.coordinator import http_view, repository
from itinerant.runtime.store import Store
from itinerant.security.tokens import TokenTable
from itinerant.settings import Settings

OPERATOR = "operator-token-0123456789"
CALLER = "caller-token-0123456789"


@pytest.fixture
async def view(tmp_path: Path) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    store = Store(tmp_path / "coordinator.db", (repository.SAGAS,))
    tokens = TokenTable(
        [("operator", SecretStr(OPERATOR)), ("alice", SecretStr(CALLER))], ["operator"]
    )
    client = TestClient(TestServer(http_view.make_app(store, tokens)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        store.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_healthz_is_public(view: TestClient) -> None:  # type: ignore[type-arg]
    assert (await view.get("/healthz")).status == 200


async def test_an_operators_token_is_required(view: TestClient) -> None:  # type: ignore[type-arg]
    for path in ("/sagas", "/sagas/some-saga"):
        missing = await view.get(path)
        assert missing.status == 401
        assert missing.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in (await missing.json())["error"]
        assert (await view.get(path, headers=auth("wrong-token-0123456789"))).status == 401
        caller = await view.get(path, headers=auth(CALLER))
        assert caller.status == 403
        assert "not an operator" in (await caller.json())["error"]
    assert (await view.get("/sagas", headers=auth(OPERATOR))).status == 200
    assert (await view.get("/sagas/some-saga", headers=auth(OPERATOR))).status == 404


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "abc", "1.5", ""])
async def test_a_limit_out_of_bounds_is_400(
    view: TestClient,  # type: ignore[type-arg]
    limit: str,
) -> None:
    reply = await view.get(f"/sagas?limit={limit}", headers=auth(OPERATOR))
    assert reply.status == 400
    assert "1 to 1000" in (await reply.json())["error"]


@pytest.mark.parametrize("limit", ["1", "1000"])
async def test_a_limit_in_bounds_answers(
    view: TestClient,  # type: ignore[type-arg]
    limit: str,
) -> None:
    reply = await view.get(f"/sagas?limit={limit}", headers=auth(OPERATOR))
    assert reply.status == 200 and (await reply.json())["sagas"] == []


def test_binds_loopback_by_default() -> None:
    assert Settings().coordinator_http_host == "127.0.0.1"
