"""Push configs per task and the webhook poster, against a real local HTTP receiver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from itinerant.gateway.push import (
    TOKEN_HEADER,
    InvalidWebhook,
    PushConfigs,
    PushSender,
    PushTarget,
    check_url,
)
from itinerant.settings import Settings
from tests.unit.gateway_fakes import ALICE, BOB, Harness, bearer, saga, send_body, sent_task


class Receiver:
    """An aiohttp webhook on 127.0.0.1 that records what it receives; answers ``statuses`` in
    turn (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.received: list[tuple[dict[str, Any], str | None]] = []
        self.arrived = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        status = self.statuses.pop(0) if self.statuses else 200
        if status == 200:
            self.received.append((await request.json(), request.headers.get(TOKEN_HEADER)))
            self.arrived.set()
        return web.Response(status=status)


@pytest.fixture
async def receiver(request: pytest.FixtureRequest) -> AsyncIterator[Receiver]:
    found = Receiver(getattr(request, "param", None))
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    found.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield found
    finally:
        await runner.cleanup()


async def test_posts_the_task_with_its_token(receiver: Receiver) -> None:
    sender = PushSender(delays=())
    try:
        task = {"id": "t1", "status": {"state": "TASK_STATE_COMPLETED"}}
        assert await sender.send(PushTarget("c1", receiver.url, "secret"), task)
    finally:
        await sender.close()
    assert receiver.received == [(task, "secret")]


@pytest.mark.parametrize("receiver", [[503, 502]], indirect=True)
async def test_retries_server_errors(receiver: Receiver) -> None:
    sender = PushSender(delays=(0.01, 0.01))
    try:
        assert await sender.send(PushTarget("c1", receiver.url), {"id": "t1"})
    finally:
        await sender.close()
    assert receiver.received == [({"id": "t1"}, None)]


@pytest.mark.parametrize("receiver", [[404]], indirect=True)
async def test_client_error_is_not_retried(receiver: Receiver) -> None:
    sender = PushSender(delays=(0.01, 0.01))
    try:
        assert not await sender.send(PushTarget("c1", receiver.url), {"id": "t1"})
    finally:
        await sender.close()
    assert receiver.statuses == [] and receiver.received == []


async def test_unreachable_webhook_is_reported_not_raised() -> None:
    sender = PushSender(timeout_s=1.0, delays=(0.01,))
    try:
        assert not await sender.send(PushTarget("c1", "http://127.0.0.1:9/hook"), {"id": "t1"})
    finally:
        await sender.close()


@pytest.mark.parametrize(
    "url", ["ftp://example.org/x", "/relative", "http://", "file:///etc/passwd", "x" * 3000]
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhook):
        check_url(url)


def test_store_per_task_bounds_and_state_changes() -> None:
    configs = PushConfigs(kept=2, per_task=2)
    configs.set("t1", PushTarget("a", "http://127.0.0.1/a"))
    configs.set("t1", PushTarget("b", "https://example.org/b", "tok"))
    with pytest.raises(InvalidWebhook):
        configs.set("t1", PushTarget("c", "http://127.0.0.1/c"))
    configs.set("t1", PushTarget("a", "http://127.0.0.1/a2"))  # replacing is not adding
    assert [t.url for t in configs.targets("t1")] == [
        "http://127.0.0.1/a2",
        "https://example.org/b",
    ]
    assert configs.get("t1", "b") == PushTarget("b", "https://example.org/b", "tok")
    assert configs.get("t2", "a") is None

    assert configs.changed("t1", "working")
    assert not configs.changed("t1", "working")
    assert configs.changed("t1", "completed")
    assert not configs.changed("t9", "working")  # no webhook: nothing to notify

    configs.set("t2", PushTarget("a", "http://127.0.0.1/a"))
    configs.set("t3", PushTarget("a", "http://127.0.0.1/a"))  # t1 is the oldest: dropped
    assert configs.tasks() == ["t2", "t3"] and configs.targets("t1") == []

    assert configs.delete("t2", "a") and not configs.delete("t2", "a")
    assert configs.tasks() == ["t3"]


# -- wired into the gateway (the mesh faked, the webhook real) ------------------------------------


@pytest.fixture
async def asgi(settings: Settings) -> AsyncIterator[tuple[Harness, httpx.AsyncClient]]:
    h = Harness(settings)
    transport = httpx.ASGITransport(app=h.gateway.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield h, client
    finally:
        await h.gateway.handler.close()


def _rpc(method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 3, "method": method, "params": params}


async def _within(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_webhook_hears_each_state_change_until_completed(
    asgi: tuple[Harness, httpx.AsyncClient], receiver: Receiver
) -> None:
    h, client = asgi
    sent = sent_task((await client.post("/", json=send_body(), headers=bearer(ALICE))).json())
    task_id = sent["id"]
    h.view.sagas[task_id] = saga(task_id, "alice")
    params = {"taskId": task_id, "url": receiver.url, "token": "hook-secret", "id": "c1"}
    stored = await client.post(
        "/", json=_rpc("CreateTaskPushNotificationConfig", params), headers=bearer(ALICE)
    )
    assert stored.json()["result"]["id"] == "c1"
    await _within(lambda: len(receiver.received) == 1)
    working, token = receiver.received[0]
    assert list(working) == ["task"]  # an A2A 1.0 StreamResponse
    working = working["task"]
    assert working["id"] == task_id and working["status"]["state"] == "TASK_STATE_WORKING"
    assert token == "hook-secret"
    # the saga ends: its record wakes the watcher, which posts the completed task once
    h.view.sagas[task_id] = saga(task_id, "alice", state="completed", output={"ok": True})
    result = {"saga_id": task_id, "status": "completed", "output": {"ok": True}}
    h.feed.publish(h.feed.settings.results_topic, task_id, result)
    await _within(lambda: len(receiver.received) == 2)
    done = receiver.received[1][0]["task"]
    assert done["status"]["state"] == "TASK_STATE_COMPLETED"
    assert done["artifacts"][0]["parts"][0]["data"] == {"ok": True}
    await _within(lambda: not h.gateway.handler._watchers)  # the watcher ended with the task
    assert len(receiver.received) == 2

    listed = await client.post(
        "/",
        json=_rpc("ListTaskPushNotificationConfigs", {"taskId": task_id}),
        headers=bearer(ALICE),
    )
    assert [c["url"] for c in listed.json()["result"]["configs"]] == [receiver.url]
    got = await client.post(
        "/", json=_rpc("GetTaskPushNotificationConfig", {"taskId": task_id, "id": "c1"}),
        headers=bearer(ALICE),
    )  # fmt: skip
    assert got.json()["result"]["token"] == "hook-secret"
    # another caller's task is, to that caller, a task that does not exist
    for method in ("GetTaskPushNotificationConfig", "ListTaskPushNotificationConfigs"):
        theirs = await client.post(
            "/", json=_rpc(method, {"taskId": task_id, "id": "c1"}), headers=bearer(BOB)
        )
        assert theirs.json()["error"]["code"] == -32001
    gone = _rpc("DeleteTaskPushNotificationConfig", {"taskId": task_id, "id": "c1"})
    deleted = (await client.post("/", json=gone, headers=bearer(ALICE))).json()
    assert "error" not in deleted and deleted.get("result") is None, deleted
    again = await client.post("/", json=gone, headers=bearer(ALICE))
    assert again.json()["error"]["code"] == -32602


async def test_bad_webhook_is_invalid_params(asgi: tuple[Harness, httpx.AsyncClient]) -> None:
    h, client = asgi
    sent = sent_task((await client.post("/", json=send_body(), headers=bearer(ALICE))).json())
    params = {"taskId": sent["id"], "url": "file:///etc/passwd"}
    reply = await client.post(
        "/", json=_rpc("CreateTaskPushNotificationConfig", params), headers=bearer(ALICE)
    )
    assert reply.json()["error"]["code"] == -32602
    assert "http" in reply.json()["error"]["message"]
    assert not h.gateway.handler._watchers
