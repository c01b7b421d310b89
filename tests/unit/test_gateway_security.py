"""The gateway's callers (docs/security-gateway.md): each token a principal that sees and cancels
only its own tasks, limits per principal, refusal to listen beyond loopback without a token, and
errors that name no internal address. The mesh is faked (tests/unit/gateway_fakes.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from itinerant.errors import BrokerUnavailable
from itinerant.gateway.app import build
from itinerant.gateway.config import GatewayExposed, gateway_config
from itinerant.gateway.limits import RateLimiter, StreamSlots, retry_after
from itinerant.gateway.mesh import CoordinatorUnavailable
from itinerant.security.keys import ensure_local_keys, keys_dir
from itinerant.security.signing import CUSTOMER_HEADER, mesh_keys
from itinerant.security.tokens import TOKENS_FILE, ensure_local_tokens
from itinerant.settings import Settings
from services.mesh import mesh as travel
from tests.unit.gateway_fakes import (
    ALICE,
    BOB,
    OPERATOR,
    FakeFeed,
    FakePublisher,
    FakeView,
    Harness,
    bearer,
    rpc,
    saga,
    send_body,
    sent_task,
    trip,
)

INTERNAL_ADDRESSES = ("10.1.2.3", "kafka.internal", "9092", "8470")


@pytest.fixture
def harness(settings: Settings) -> Iterator[tuple[Harness, TestClient]]:
    built = Harness(settings)
    with TestClient(built.gateway.app) as client:
        yield built, client


def start_task(client: TestClient, token: str, **data: Any) -> str:
    reply = client.post("/", json=send_body({**trip(), **data}), headers=bearer(token)).json()
    task_id: str = sent_task(reply)["id"]
    return task_id


# -- tokens ----------------------------------------------------------------------------------------


def test_no_token_or_a_wrong_one_is_401_and_publishes_nothing(
    harness: tuple[Harness, TestClient],
) -> None:
    h, client = harness
    for headers in ({}, bearer("not-a-token-of-anyone"), {"authorization": f"Basic {ALICE}"}):
        reply = client.post("/", json=send_body(), headers=headers)
        assert reply.status_code == 401
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert "Authorization: Bearer" in reply.json()["error"]["message"]
    assert h.publisher.requests == []


def test_the_request_is_published_for_the_caller(harness: tuple[Harness, TestClient]) -> None:
    h, client = harness
    start_task(client, ALICE)
    start_task(client, BOB)
    assert [customer for _env, customer in h.publisher.requests] == ["alice", "bob"]
    assert [env.customer for env, _customer in h.publisher.requests] == ["alice", "bob"]


def test_the_published_request_is_signed_as_the_gateway_for_the_caller(
    settings: Settings,
) -> None:
    ensure_local_keys(keys_dir(settings), ["gateway"])
    publisher = FakePublisher(settings)
    request = travel.request_model.model_validate(trip())
    envelope = publisher.request_envelope(request, "saga-1", "alice", None, None)
    message = publisher.signed(settings.requests_topic, envelope)
    assert message.header(CUSTOMER_HEADER) == b"alice"
    assert message.header("ce_type") == b"itinerant.request.v1"
    assert message.header("ce_source") == b"/itinerant/gateway"
    assert message.header("ce_sagaid") == b"saga-1"
    assert mesh_keys(settings).verify(message) == "gateway"


# -- who sees what ---------------------------------------------------------------------------------


def test_another_callers_task_is_not_found_exactly_like_an_unknown_one(
    harness: tuple[Harness, TestClient],
) -> None:
    h, client = harness
    task_id = start_task(client, ALICE)
    h.view.sagas[task_id] = saga(task_id, "alice")
    unknown = client.post("/", json=rpc("GetTask", "no-such-task"), headers=bearer(BOB)).json()
    for method in ("GetTask", "CancelTask"):
        theirs = client.post("/", json=rpc(method, task_id), headers=bearer(BOB)).json()
        assert theirs == unknown  # the same answer, word for word: no oracle
    assert unknown["error"]["code"] == -32001
    assert h.publisher.cancels == []  # bob's cancel reached nothing
    mine = client.post("/", json=rpc("GetTask", task_id), headers=bearer(ALICE)).json()
    assert mine["result"]["id"] == task_id


def test_resubscribe_to_another_callers_task_is_not_found(
    harness: tuple[Harness, TestClient],
) -> None:
    h, client = harness
    task_id = start_task(client, ALICE)
    h.view.sagas[task_id] = saga(task_id, "alice", state="completed")
    with client.stream(
        "POST", "/", json=rpc("SubscribeToTask", task_id), headers=bearer(BOB)
    ) as reply:
        body = reply.read().decode()
    assert "-32001" in body and task_id not in body


def test_a_saga_this_gateway_did_not_publish_belongs_to_its_customer(
    harness: tuple[Harness, TestClient],
) -> None:
    """After a gateway restart the coordinator's record of the customer decides."""
    h, client = harness
    h.view.sagas["s-bob"] = saga("s-bob", "bob")
    h.view.sagas["s-bare"] = saga("s-bare", "anonymous:s-bare")
    assert "result" in client.post("/", json=rpc("GetTask", "s-bob"), headers=bearer(BOB)).json()
    for task_id, token in (("s-bob", ALICE), ("s-bare", ALICE), ("s-bare", BOB)):
        reply = client.post("/", json=rpc("GetTask", task_id), headers=bearer(token)).json()
        assert reply["error"]["code"] == -32001


def test_an_operator_sees_and_cancels_every_task(harness: tuple[Harness, TestClient]) -> None:
    h, client = harness
    task_id = start_task(client, ALICE)
    h.view.sagas[task_id] = saga(task_id, "alice")
    h.view.sagas["s-bare"] = saga("s-bare", "anonymous:s-bare")
    for seen in (task_id, "s-bare"):
        got = client.post("/", json=rpc("GetTask", seen), headers=bearer(OPERATOR)).json()
        assert got["result"]["id"] == seen
    cancelled = client.post("/", json=rpc("CancelTask", task_id), headers=bearer(OPERATOR))
    assert cancelled.json()["result"]["id"] == task_id
    assert [customer for _env, customer in h.publisher.cancels] == ["operator"]


def test_a_request_id_is_the_callers_own(harness: tuple[Harness, TestClient]) -> None:
    """The same request_id from two callers makes two tasks; from one caller, one."""
    h, client = harness
    alice = start_task(client, ALICE, request_id="trip-1")
    again = start_task(client, ALICE, request_id="trip-1")
    bob = start_task(client, BOB, request_id="trip-1")
    assert alice == again and bob != alice
    assert len(h.publisher.requests) == 2


# -- limits ----------------------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after_per_principal(settings: Settings) -> None:
    h = Harness(settings, gateway_rate_per_s=0.5, gateway_rate_burst=2)
    with TestClient(h.gateway.app) as client:
        body = rpc("GetTask", "x")
        assert [
            client.post("/", json=body, headers=bearer(ALICE)).status_code for _ in range(2)
        ] == [200, 200]
        refused = client.post("/", json=body, headers=bearer(ALICE))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2"
        assert "alice" in refused.json()["error"]["message"]
        assert client.post("/", json=body, headers=bearer(BOB)).status_code == 200


def test_token_bucket_refills_at_the_rate() -> None:
    now = [100.0]
    bucket = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert bucket.take("a") == 0.0
    assert bucket.take("b") == 0.0  # every principal its own bucket
    now[0] += 100
    assert [bucket.take("a") for _ in range(4)][-1] > 0  # refills to the burst, no further
    assert retry_after(0.01) == "1" and retry_after(2.2) == "3"


def test_stream_slots() -> None:
    slots = StreamSlots(2)
    assert slots.acquire("a") and slots.acquire("a") and not slots.acquire("a")
    assert slots.acquire("b")
    slots.release("a")
    assert slots.open("a") == 1 and slots.acquire("a")


@pytest.fixture
async def asgi(settings: Settings) -> AsyncIterator[tuple[Harness, httpx.AsyncClient]]:
    h = Harness(settings, gateway_max_streams=1)
    transport = httpx.ASGITransport(app=h.gateway.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield h, client


async def wait_for(check: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_open_streams_are_capped_per_principal_and_fed_by_records(
    asgi: tuple[Harness, httpx.AsyncClient],
) -> None:
    h, client = asgi
    stream_body = send_body(method="SendStreamingMessage")
    first = asyncio.create_task(client.post("/", json=stream_body, headers=bearer(ALICE)))
    await wait_for(lambda: h.feed.subscribers() == 1)  # alice's stream is open, waiting
    [(envelope, _customer)] = h.publisher.requests
    saga_id = envelope.saga_id
    refused = await client.post("/", json=stream_body, headers=bearer(ALICE))
    assert refused.status_code == 429 and refused.headers["retry-after"]
    assert "ITINERANT_GATEWAY_MAX_STREAMS" in refused.json()["error"]["message"]
    other = await client.post("/", json=rpc("GetTask", saga_id), headers=bearer(ALICE))
    assert other.status_code == 200  # only streams are capped
    reads = h.view.reads
    await asyncio.sleep(0.5)
    assert h.view.reads == reads, "an idle stream does not read the saga view"
    # the coordinator finishes the saga: its event wakes the stream, which ends with its result
    h.view.sagas[saga_id] = saga(saga_id, "alice", state="completed", output={"ok": True})
    result = {"saga_id": saga_id, "status": "completed", "output": {"ok": True}}
    h.feed.publish(h.feed.settings.results_topic, saga_id, result)
    reply = await asyncio.wait_for(first, 10)
    events = [
        json.loads(line[len("data:") :])
        for line in reply.text.splitlines()
        if line.startswith("data:")
    ]
    assert events[-1]["result"]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert h.view.reads - reads <= 2, "woken once, read the view once or twice"
    await wait_for(lambda: h.feed.subscribers() == 0)
    again = asyncio.create_task(client.post("/", json=stream_body, headers=bearer(ALICE)))
    await wait_for(lambda: h.feed.subscribers() == 1)  # the slot was given back
    [_, (second, _c)] = h.publisher.requests
    h.view.sagas[second.saga_id] = saga(second.saga_id, "alice", state="completed")
    h.feed.publish(
        h.feed.settings.results_topic, second.saga_id, {**result, "saga_id": second.saga_id}
    )
    assert (await asyncio.wait_for(again, 10)).status_code == 200


# -- exposure --------------------------------------------------------------------------------------


def test_refuses_to_listen_beyond_loopback_without_a_token(settings: Settings) -> None:
    exposed = gateway_config(settings, gateway_host="0.0.0.0")
    with pytest.raises(GatewayExposed) as raised:
        exposed.check_exposure()
    assert "ITINERANT_GATEWAY_TOKENS" in raised.value.hint
    with pytest.raises(GatewayExposed):
        build(settings, exposed, mesh=travel, publisher=FakePublisher(settings),
              view=FakeView(), feed=FakeFeed(settings))  # fmt: skip
    for host in ("127.0.0.1", "localhost", "::1"):
        gateway_config(settings, gateway_host=host).check_exposure()  # loopback: allowed
    gateway_config(settings, gateway_host="0.0.0.0", gateway_token=ALICE).check_exposure()


def test_the_tokens_up_generated_are_the_gateways(settings: Settings) -> None:
    prepared = ensure_local_tokens(settings)
    assert (settings.data_dir / TOKENS_FILE).exists()
    plain = Settings(data_dir=settings.data_dir, coordinator_http_port=0)  # a child process
    config = gateway_config(plain, gateway_host="0.0.0.0")
    config.check_exposure()
    token = prepared.gateway_tokens["user"].get_secret_value()
    found = config.tokens.identify(token)
    assert found is not None and found.name == "user"
    assert config.view_token == prepared.operator_tokens["operator"]


# -- errors ----------------------------------------------------------------------------------------


class FailingPublisher(FakePublisher):
    async def publish_request(self, *args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailable("Kafka at kafka.internal:9092 did not take the message: timed out")


def test_errors_name_no_internal_address(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    h = Harness(settings)
    h.gateway = build(
        settings, h.config, mesh=travel, publisher=FailingPublisher(settings), view=h.view,
        feed=h.feed,
    )  # fmt: skip
    with TestClient(h.gateway.app, headers=bearer(ALICE)) as client:
        sent = client.post("/", json=send_body()).json()
        h.view.error = CoordinatorUnavailable(
            "the coordinator's saga view at http://10.1.2.3:8470 does not answer"
        )
        got = client.post("/", json=rpc("GetTask", "t1")).json()
        h.view.error = RuntimeError("connect to 10.1.2.3:8470 refused")
        internal = client.post("/", json=rpc("GetTask", "t1")).json()
    for reply in (sent, got, internal):
        message = reply["error"]["message"]
        assert message and not any(a in message for a in INTERNAL_ADDRESSES), message
    assert "retry" in sent["error"]["message"] and "retry" in got["error"]["message"]
    logged = caplog.text
    assert "kafka.internal:9092" in logged and "10.1.2.3:8470" in logged  # the operator's log
