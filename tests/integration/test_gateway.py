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
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, ClientFactory
from a2a.types import (
    AgentCard,
    CancelTaskRequest,
    GetExtendedAgentCardRequest,
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    Task,
    TaskNotCancelableError,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.signing import SignatureVerificationError
from aiohttp import web

from itinerant.cli.kafka_io import Seen, follow
from itinerant.gateway.card_signing import jwk, verifier
from itinerant.gateway.proto import from_struct, from_value, struct, value
from itinerant.security.keys import KeyRing, keys_dir

from .conftest import EXAMPLES, System, free_port

pytestmark = pytest.mark.integration

TOKEN = "gateway-test-token"
V1 = {"A2A-Version": "1.0"}
COMPLETED = "TASK_STATE_COMPLETED"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FINAL = {
    TaskState.TASK_STATE_COMPLETED,
    TaskState.TASK_STATE_FAILED,
    TaskState.TASK_STATE_CANCELED,
    TaskState.TASK_STATE_REJECTED,
}


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


def data_part(data: dict[str, Any]) -> Part:
    return Part(data=value(data), media_type="application/json")


def user_message(*parts: Part, metadata: dict[str, Any] | None = None) -> Message:
    message = Message(role=Role.ROLE_USER, message_id=str(uuid.uuid4()), parts=parts)
    if metadata is not None:
        message.metadata.CopyFrom(struct(metadata))
    return message


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
    async for event in client.send_message(SendMessageRequest(message=message)):
        assert event.HasField("task"), f"expected a task, got {event}"
        return event.task
    raise AssertionError("SendMessage returned nothing")


async def get(client: Client, task_id: str) -> Task:
    return await client.get_task(GetTaskRequest(id=task_id))


async def poll_task(client: Client, task_id: str, timeout_s: float = 60) -> Task:
    deadline = time.monotonic() + timeout_s
    while True:
        task = await get(client, task_id)
        if task.status.state in FINAL:
            return task
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} still {task.status.state} after {timeout_s:.0f}s")
        await asyncio.sleep(0.1)


def text_of(message: Message) -> str:
    return " ".join(p.text for p in message.parts if p.WhichOneof("content") == "text")


def copy(event: StreamResponse) -> StreamResponse:
    kept = StreamResponse()
    kept.CopyFrom(event)
    return kept


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
    assert [(i.url, i.protocol_version) for i in card.supported_interfaces] == [
        (gateway.url, "1.0"),
        (gateway.url, "0.3"),
    ]
    assert card.capabilities.streaming and card.capabilities.extended_agent_card
    assert {s.id for s in card.skills} == {"plan-trip", "book-trip", "refund"}
    assert list(card.default_input_modes) == ["application/json", "text/plain"]
    assert "bearer" in card.security_schemes


async def test_send_then_poll_to_completion(
    system: System, gateway: Gateway, http: httpx.AsyncClient
) -> None:
    _card, client = await a2a_client(http, gateway.url, streaming=False)
    task = await send(
        client,
        user_message(data_part(trip()), metadata={"itinerant": {"max_hops": 500}}),
    )
    assert task.status.state == TaskState.TASK_STATE_SUBMITTED
    done = await poll_task(client, task.id)
    assert done.status.state == TaskState.TASK_STATE_COMPLETED, text_of(done.status.message)
    assert done.artifacts, "a completed task carries the saga's final payload"
    assert done.artifacts[0].name == "output"
    parts = list(done.artifacts[0].parts)
    itinerary = next(from_value(p.data) for p in parts if p.WhichOneof("content") == "data")
    assert itinerary["flight"]["outbound"]["origin"] == "MAD"
    assert any(p.text for p in parts)
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
        client, user_message(Part(text=text), metadata={"itinerant": {"traveller": "Alan"}})
    )
    done = await poll_task(client, task.id)
    assert done.status.state == TaskState.TASK_STATE_COMPLETED, text_of(done.status.message)


async def test_streaming_updates_in_order(gateway: Gateway, http: httpx.AsyncClient) -> None:
    _card, client = await a2a_client(http, gateway.url, streaming=True)
    updates: list[StreamResponse] = []

    async def collect() -> None:
        request = SendMessageRequest(message=user_message(data_part(trip())))
        async for event in client.send_message(request):
            updates.append(copy(event))

    await asyncio.wait_for(collect(), timeout=60)
    assert updates[0].HasField("task")
    assert updates[0].task.status.state == TaskState.TASK_STATE_SUBMITTED
    statuses = [u.status_update for u in updates if u.HasField("status_update")]
    indexes = [
        from_struct(u.metadata)["itinerant"]["index"]
        for u in statuses
        if "index" in from_struct(u.metadata)["itinerant"]
    ]
    assert indexes == list(range(len(indexes))), "every timeline entry once, in order"
    events = [from_struct(u.metadata)["itinerant"]["event"] for u in statuses[:-1]]
    assert events[0] == "started" and events.count("step_completed") >= 4
    assert all(u.status.state == TaskState.TASK_STATE_WORKING for u in statuses[:-1])
    assert updates[-2].HasField("artifact_update")
    last = updates[-1]
    assert last.HasField("status_update")
    assert last.status_update.status.state == TaskState.TASK_STATE_COMPLETED


async def test_cancel_mid_saga(system: System, gateway: Gateway, http: httpx.AsyncClient) -> None:
    _card, client = await a2a_client(http, gateway.url, streaming=False)
    for _attempt in range(5):  # a saga may finish before the cancel reaches it: try again
        task = await send(client, user_message(data_part(trip())))
        try:
            cancelled = await client.cancel_task(CancelTaskRequest(id=task.id))
            break
        except TaskNotCancelableError:  # already finished
            continue
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
    assert done.status.state in (
        TaskState.TASK_STATE_CANCELED,
        TaskState.TASK_STATE_COMPLETED,
    ), text_of(done.status.message)
    if done.status.state == TaskState.TASK_STATE_CANCELED:
        assert not done.artifacts


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
    body = {"jsonrpc": "2.0", "id": 1, "method": "CancelTask", "params": {"id": "no-such"}}
    reply = (await http.post(gateway.url, json=body, headers=V1)).json()
    assert reply["error"]["code"] == -32001  # TaskNotFoundError


async def test_bad_input(system: System, gateway: Gateway, http: httpx.AsyncClient) -> None:
    url = gateway.url

    async def rpc(body: Any) -> dict[str, Any]:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"content-type": "application/json", **V1}
        response = await http.post(url, content=raw, headers=headers)
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
            "method": "SendMessage",
            "params": {
                "message": {
                    "role": "ROLE_USER",
                    "messageId": "m",
                    "parts": [{"data": {**trip(), "request_id": request_id, "origin": "Madrid"}}],
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
    later = await send(client, user_message(data_part(trip())))
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
        for call in (
            client.get_task(GetTaskRequest(id="any")),
            client.get_extended_agent_card(GetExtendedAgentCardRequest()),  # only for callers
        ):
            with pytest.raises(A2AClientError) as raised:
                await call
            assert "401" in str(raised.value)
        wrong = await anonymous.post(
            gateway.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "x"}},
            headers={"Authorization": "Bearer wrong", **V1},
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
    assert "A2A 1.0, 0.3; signed" in shown.output
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
        task = await send(client, user_message(data_part(trip())))
        webhook = TaskPushNotificationConfig(
            task_id=task.id, id="hook", url=f"http://127.0.0.1:{port}/hook", token="hook-token"
        )
        stored = await client.create_task_push_notification_config(webhook)
        assert stored.url == webhook.url and stored.id == "hook"
        deadline = time.monotonic() + 60
        while not any(t["task"]["status"]["state"] == COMPLETED for t, _tok in received):
            assert time.monotonic() < deadline, f"no completed task at the webhook: {received}"
            await asyncio.sleep(0.05)
    finally:
        await runner.cleanup()
    done, token = received[-1]
    assert token == "hook-token" and done["task"]["id"] == task.id  # a StreamResponse
    assert done["task"]["artifacts"][0]["name"] == "output"
    states = [t["task"]["status"]["state"] for t, _tok in received]
    assert len(states) == len(set(states)), f"each state once: {states}"


async def test_the_version_header_and_a_0_3_client(
    gateway: Gateway, http: httpx.AsyncClient
) -> None:
    """A2A 1.0 methods need ``A2A-Version: 1.0`` (and are answered with it); an A2A 0.3 client
    (0.3 method names and shapes, no header) is served through the SDK's compat layer."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "no-such"}}
    bare = await http.post(gateway.url, json=body)
    assert bare.json()["error"]["code"] == -32009  # VersionNotSupportedError
    assert "A2A-Version: 1.0" in bare.json()["error"]["message"]
    later = await http.post(gateway.url, json=body, headers={"A2A-Version": "2.0"})
    assert later.json()["error"]["code"] == -32009 and "'2.0'" in later.json()["error"]["message"]
    served = await http.post(gateway.url, json=body, headers=V1)
    assert served.headers["A2A-Version"] == "1.0" and served.json()["error"]["code"] == -32001
    old = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "message/send",
        "params": {
            "message": {
                "role": "user",
                "messageId": str(uuid.uuid4()),
                "kind": "message",
                "parts": [{"kind": "data", "data": trip()}],
            }
        },
    }
    sent = await http.post(gateway.url, json=old)
    assert sent.headers["A2A-Version"] == "0.3"
    task = sent.json()["result"]
    assert task["kind"] == "task" and task["status"]["state"] == "submitted"
    deadline = time.monotonic() + 60
    while True:
        poll = {"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {"id": task["id"]}}
        got = (await http.post(gateway.url, json=poll)).json()["result"]
        if got["status"]["state"] == "completed":
            break
        assert time.monotonic() < deadline, got["status"]
        await asyncio.sleep(0.1)
    assert got["artifacts"][0]["parts"][0]["kind"] == "data"  # in 0.3's shape
    card = (await http.get(gateway.url + ".well-known/agent-card.json")).json()
    assert card["protocolVersion"] == "0.3" and card["url"] == gateway.url  # 0.3's fields


async def test_the_cards_are_signed_and_the_extended_card_is_the_callers(
    system: System, gateway: Gateway, http: httpx.AsyncClient
) -> None:
    """The mesh's card, each agent's card and the extended card verify against the gateway's
    public key (the mesh's key ring); a card changed after signing does not."""
    public = KeyRing(system.settings).public("gateway")
    assert public is not None
    check = verifier(public)
    resolver = A2ACardResolver(http, gateway.url)
    card = await resolver.get_agent_card(signature_verifier=check)
    [signature] = card.signatures
    jwks = (await http.get(gateway.url + ".well-known/jwks.json")).json()
    assert jwks == {"keys": [jwk(public)]}  # the key the signature's jku points at
    forged = AgentCard()
    forged.CopyFrom(card)
    forged.supported_interfaces[0].url = "http://attacker.example/"
    with pytest.raises(SignatureVerificationError):
        check(forged)
    flights = await resolver.get_agent_card(
        "agents/flights/.well-known/agent-card.json", signature_verifier=check
    )
    assert flights.name == "travel/flights" and "flights.book" in {s.id for s in flights.skills}
    assert flights.signatures[0].signature != signature.signature
    client = ClientFactory(ClientConfig(streaming=False, httpx_client=http)).create(card)
    extended = await client.get_extended_agent_card(
        GetExtendedAgentCardRequest(), signature_verifier=check
    )
    assert {"book-trip", "flights.book", "hotels.book"} <= {s.id for s in extended.skills}
    assert "'default'" in extended.description  # ITINERANT_GATEWAY_TOKEN's principal
