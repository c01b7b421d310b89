"""The A2A gateway against the whole system (real broker, every service), driven by the
a2a-sdk client: card discovery, send + poll, streaming, cancel, bad input, the bearer token."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from a2a.client import A2ACardResolver, Client, ClientConfig, ClientFactory
from a2a.client.errors import A2AClientHTTPError, A2AClientJSONRPCError
from a2a.types import (
    AgentCard,
    DataPart,
    Message,
    Part,
    PushNotificationConfig,
    Role,
    Task,
    TaskArtifactUpdateEvent,
    TaskIdParams,
    TaskPushNotificationConfig,
    TaskQueryParams,
    TaskState,
    TaskStatusUpdateEvent,
    TextPart,
)
from aiohttp import web

from itinerant.cli.kafka_io import Seen, follow
from itinerant.security.keys import keys_dir

from .conftest import EXAMPLES, System, free_port

pytestmark = pytest.mark.integration

TOKEN = "gateway-test-token"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FINAL = {TaskState.completed, TaskState.failed, TaskState.canceled, TaskState.rejected}


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def gateway(system: System) -> Iterator[Gateway]:
    """``python -m itinerant.gateway`` as its own process on a free port, with a token."""
    port = free_port()
    data_dir = system.settings.data_dir / "a2a-test"  # apart from a supervised gateway's files
    log = system.settings.data_dir / "logs" / "gateway-test.log"
    env = {
        **os.environ,
        **system.settings.to_env(),
        "ITINERANT_DATA_DIR": str(data_dir),
        "ITINERANT_KEYS_DIR": str(keys_dir(system.settings)),  # the mesh's keys
        "ITINERANT_GATEWAY_PORT": str(port),
        "ITINERANT_GATEWAY_TOKEN": TOKEN,
        "ITINERANT_GATEWAY_MAX_BODY_BYTES": "65536",
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "itinerant.gateway"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    ready = data_dir / "run" / "gateway.ready"
    deadline = time.monotonic() + 30
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gateway did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    try:
        yield Gateway(url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        assert not ready.exists(), "the gateway left its ready file behind"


def trip() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / "trip.json").read_text())
    return raw


def user_message(*parts: Any, metadata: dict[str, Any] | None = None) -> Message:
    return Message(
        role=Role.user,
        message_id=str(uuid.uuid4()),
        parts=[Part(root=p) for p in parts],
        metadata=metadata,
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}", "traceparent": TRACEPARENT}, timeout=30
    ) as client:
        yield client


async def a2a_client(
    http: httpx.AsyncClient, url: str, *, streaming: bool
) -> tuple[AgentCard, Client]:
    card = await A2ACardResolver(http, url).get_agent_card()
    config = ClientConfig(streaming=streaming, polling=not streaming, httpx_client=http)
    return card, ClientFactory(config).create(card)


async def send(client: Client, message: Message) -> Task:
    async for event in client.send_message(message):
        assert isinstance(event, tuple), f"expected a task, got {event}"
        return event[0]
    raise AssertionError("message/send returned nothing")


async def poll_task(client: Client, task_id: str, timeout_s: float = 60) -> Task:
    deadline = time.monotonic() + timeout_s
    while True:
        task = await client.get_task(TaskQueryParams(id=task_id))
        if task.status.state in FINAL:
            return task
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} still {task.status.state} after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)


def text_of(message: Message | None) -> str:
    if message is None:
        return ""
    return " ".join(p.root.text for p in message.parts if isinstance(p.root, TextPart))


def records(system: System, topic: str, saga_id: str, count: int, timeout_s: float) -> list[Seen]:
    found: list[Seen] = []
    deadline = time.monotonic() + timeout_s
    for seen in follow(system.settings, [topic]):
        if seen is not None and seen.key == saga_id:
            found.append(seen)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {count} record(s) of {saga_id} on {topic}")
    return found


async def test_card_discovery(gateway: Gateway, http: httpx.AsyncClient) -> None:
    card, _client = await a2a_client(http, gateway.url, streaming=False)
    assert card.name == "travel"  # the mesh ITINERANT_APP names (services.mesh:mesh)
    assert card.url == gateway.url
    assert card.capabilities.streaming is True
    assert card.protocol_version == "0.3.0"
    assert {s.id for s in card.skills} == {"plan-trip", "book-trip", "refund"}
    assert card.default_input_modes == ["application/json", "text/plain"]
    assert card.security_schemes is not None and "bearer" in card.security_schemes


async def test_send_then_poll_to_completion(
    system: System, gateway: Gateway, http: httpx.AsyncClient
) -> None:
    _card, client = await a2a_client(http, gateway.url, streaming=False)
    task = await send(
        client,
        user_message(DataPart(data=trip()), metadata={"itinerant": {"max_hops": 500}}),
    )
    assert task.status.state == TaskState.submitted
    done = await poll_task(client, task.id)
    assert done.status.state == TaskState.completed, text_of(done.status.message)
    assert done.artifacts, "a completed task carries the saga's final payload"
    assert done.artifacts[0].name == "output"
    parts = [p.root for p in done.artifacts[0].parts]
    itinerary = next(p.data for p in parts if isinstance(p, DataPart))
    assert itinerary["flight"]["outbound"]["origin"] == "MAD"
    assert any(isinstance(p, TextPart) and p.text for p in parts)
    # the task id is the saga id: the coordinator and the results topic know it by that key
    [request] = records(system, system.settings.requests_topic, task.id, 1, 10)
    assert request.headers["ce_source"] == "/itinerant/gateway"
    assert request.headers["traceparent"].split("-")[1] == TRACEPARENT.split("-")[1]
    assert request.value is not None and request.value["max_hops"] == 100  # capped
    [result] = records(system, system.settings.results_topic, task.id, 1, 10)
    assert result.value is not None and result.value["status"] == "completed"


async def test_free_text(gateway: Gateway, http: httpx.AsyncClient) -> None:
    _card, client = await a2a_client(http, gateway.url, streaming=False)
    text = json.loads((EXAMPLES / "free-text.json").read_text())["text"]
    task = await send(
        client, user_message(TextPart(text=text), metadata={"itinerant": {"traveller": "Alan"}})
    )
    done = await poll_task(client, task.id)
    assert done.status.state == TaskState.completed, text_of(done.status.message)


async def test_streaming_updates_in_order(gateway: Gateway, http: httpx.AsyncClient) -> None:
    _card, client = await a2a_client(http, gateway.url, streaming=True)
    updates: list[Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent] = []

    async def collect() -> None:
        async for event in client.send_message(user_message(DataPart(data=trip()))):
            assert isinstance(event, tuple)
            task, update = event  # the client updates ``task`` in place: keep a copy
            updates.append(update if update is not None else task.model_copy(deep=True))

    await asyncio.wait_for(collect(), timeout=60)
    assert isinstance(updates[0], Task) and updates[0].status.state == TaskState.submitted
    statuses = [u for u in updates if isinstance(u, TaskStatusUpdateEvent)]
    indexes = [
        u.metadata["itinerant"]["index"]
        for u in statuses
        if u.metadata and "index" in u.metadata["itinerant"]
    ]
    assert indexes == list(range(len(indexes))), "every timeline entry once, in order"
    events = [u.metadata["itinerant"]["event"] for u in statuses[:-1] if u.metadata]
    assert events[0] == "started" and events.count("step_completed") >= 4
    assert all(u.status.state == TaskState.working and not u.final for u in statuses[:-1])
    assert isinstance(updates[-2], TaskArtifactUpdateEvent)
    last = updates[-1]
    assert isinstance(last, TaskStatusUpdateEvent) and last.final
    assert last.status.state == TaskState.completed


async def test_cancel_mid_saga(system: System, gateway: Gateway, http: httpx.AsyncClient) -> None:
    _card, client = await a2a_client(http, gateway.url, streaming=False)
    for _attempt in range(5):  # a saga may finish before the cancel reaches it: try again
        task = await send(client, user_message(DataPart(data=trip())))
        try:
            cancelled = await client.cancel_task(TaskIdParams(id=task.id))
            break
        except A2AClientJSONRPCError as exc:
            assert exc.error.code == -32002, exc  # TaskNotCancelableError: already finished
    else:
        pytest.fail("every saga finished before its cancel was taken")
    assert cancelled.id == task.id
    assert "cancel requested" in text_of(cancelled.status.message)
    discards = [
        s
        for s in _events_until_discard(system, task.id)
        if s.key == task.id and s.headers.get("ce_type") == "itinerant.saga.discard_requested.v1"
    ]
    assert discards[0].value == {
        "saga_id": task.id,
        "why": "cancelled by A2A client",
        "entry": None,
        "by": "a2a",
    }
    assert discards[0].headers["ce_source"] == "/itinerant/gateway"
    done = await poll_task(client, task.id)
    # canceled when the discard reached the saga before it finished (the usual case); a saga
    # that completed first cannot be undone by a cancel that came too late
    assert done.status.state in (TaskState.canceled, TaskState.completed), text_of(
        done.status.message
    )
    if done.status.state == TaskState.canceled:
        assert done.artifacts is None


def _events_until_discard(system: System, saga_id: str) -> list[Seen]:
    return system.collect(
        [system.settings.events_topic],
        lambda seen: any(
            s.key == saga_id and s.headers.get("ce_type") == "itinerant.saga.discard_requested.v1"
            for s in seen
        ),
        15,
        "the discard request on the events topic",
    )


async def test_cancel_of_a_finished_or_unknown_task(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tasks/cancel", "params": {"id": "no-such"}}
    reply = (await http.post(gateway.url, json=body)).json()
    assert reply["error"]["code"] == -32001  # TaskNotFoundError


async def test_bad_input(system: System, gateway: Gateway, http: httpx.AsyncClient) -> None:
    url = gateway.url

    async def rpc(body: Any) -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await http.post(url, content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 200, response.text
        reply: dict[str, Any] = response.json()
        return reply

    assert (await rpc(b"not json at all"))["error"]["code"] == -32700
    assert (await rpc([1]))["error"]["code"] == -32600
    unknown = await rpc({"jsonrpc": "2.0", "id": 7, "method": "trips/book", "params": {}})
    assert unknown["error"]["code"] == -32601 and "trips/book" in unknown["error"]["message"]
    assert unknown["id"] == 7
    request_id = str(uuid.uuid4())
    invalid = await rpc(
        {
            "jsonrpc": "2.0",
            "id": 8,
            "method": "message/send",
            "params": {
                "message": {
                    "role": "user",
                    "messageId": "m",
                    "parts": [
                        {
                            "kind": "data",
                            "data": {**trip(), "request_id": request_id, "origin": "Madrid"},
                        }
                    ],
                }
            },
        }
    )
    assert invalid["error"]["code"] == -32602
    assert "origin" in invalid["error"]["message"]
    too_big = await http.post(url, content=b"{" + b" " * 70_000 + b"}")
    assert too_big.status_code == 413
    assert "65536" in too_big.json()["error"]["message"]
    # nothing was published for the invalid request: a valid one sent after it arrives alone
    _card, client = await a2a_client(http, url, streaming=False)
    later = await send(client, user_message(DataPart(data=trip())))
    seen = system.collect(
        [system.settings.requests_topic],
        lambda got: any(s.key == later.id for s in got),
        15,
        "the valid request sent after the invalid one",
    )
    assert all(s.key != request_id for s in seen)


async def test_token_is_checked(gateway: Gateway) -> None:
    async with httpx.AsyncClient(timeout=10) as anonymous:
        card = await A2ACardResolver(anonymous, gateway.url).get_agent_card()  # public
        client = ClientFactory(ClientConfig(streaming=False, httpx_client=anonymous)).create(card)
        with pytest.raises(A2AClientHTTPError) as raised:
            await client.get_task(TaskQueryParams(id="any"))
        assert raised.value.status_code == 401
        wrong = await anonymous.post(
            gateway.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tasks/get", "params": {"id": "x"}},
            headers={"Authorization": "Bearer wrong"},
        )
        assert wrong.status_code == 401 and "Bearer" in wrong.json()["error"]["message"]


def test_agents_command_shows_the_card(gateway: Gateway) -> None:
    import typer
    from typer.testing import CliRunner

    from itinerant.gateway.cli import agents

    app = typer.Typer()
    app.command()(agents)
    shown = CliRunner().invoke(app, ["--url", gateway.url])
    assert shown.exit_code == 0, shown.output
    assert "book-trip" in shown.output and "bearer" in shown.output
    as_json = CliRunner().invoke(app, ["--url", gateway.url, "--json"])
    assert json.loads(as_json.output)["capabilities"]["streaming"] is True
    missing = CliRunner().invoke(app, ["--url", f"http://127.0.0.1:{free_port()}/"])
    assert missing.exit_code == 1


async def test_push_notification_reaches_a_real_webhook(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    """The SDK client sets a webhook for its task; the gateway POSTs the completed task to an
    aiohttp receiver on this machine."""
    received: list[tuple[dict[str, Any], str | None]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.json(), request.headers.get("X-A2A-Notification-Token")))
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        _card, client = await a2a_client(http, gateway.url, streaming=False)
        task = await send(client, user_message(DataPart(data=trip())))
        webhook = PushNotificationConfig(
            id="hook", url=f"http://127.0.0.1:{port}/hook", token="hook-token"
        )
        stored = await client.set_task_callback(
            TaskPushNotificationConfig(task_id=task.id, push_notification_config=webhook)
        )
        assert stored.push_notification_config.url == webhook.url
        deadline = time.monotonic() + 60
        while not any(t["status"]["state"] == "completed" for t, _tok in received):
            assert time.monotonic() < deadline, f"no completed task at the webhook: {received}"
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    done, token = received[-1]
    assert token == "hook-token" and done["id"] == task.id
    assert done["artifacts"][0]["name"] == "output"
    states = [t["status"]["state"] for t, _tok in received]
    assert len(states) == len(set(states)), f"each state once: {states}"
