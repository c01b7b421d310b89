"""Push configs per task and the webhook poster, against a real local HTTP receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

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
    assert [t.url for t in configs.targets("t1")] == ["http://127.0.0.1/a2", "https://example.org/b"]
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
