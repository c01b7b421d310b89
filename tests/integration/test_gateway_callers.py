"""The gateway's callers against the whole system (docs/security-gateway.md): two principals,
each seeing and cancelling only its own tasks, and a stream fed by the mesh's topics rather
than by polling the coordinator's view (the gateway reaches the view through a proxy here that
counts its requests). Trips wait for an approval (threshold 100 USD), so a task stays open as
long as a test needs."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from a2a.client import Client
from a2a.types import (
    CancelTaskRequest,
    ListTasksRequest,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskNotFoundError,
    TaskState,
)

from itinerant.coordinator import repository
from itinerant.security.keys import keys_dir

from .conftest import Broker, System, free_port, start_system
from .test_gateway import (
    V1,
    a2a_client,
    copy,
    data_part,
    get,
    poll_task,
    send,
    text_of,
    trip,
    user_message,
)

pytestmark = pytest.mark.integration

ALICE = "alice-integration-token-0123456789"
BOB = "bob-integration-token-0123456789"
DISCARD = "itinerant.saga.discard_requested.v1"


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(broker, tmp_path_factory.mktemp("callers"), approval_threshold_usd=100)
    try:
        yield running
    finally:
        running.supervisor.stop()


@dataclass
class CountingProxy:
    """Forwards GETs to the coordinator's view and counts them, path by path."""

    target: int
    port: int = 0
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, saga_id: str) -> int:
        with self.lock:
            return sum(1 for p in self.paths if p.startswith(f"/sagas/{saga_id}"))


def serve_proxy(proxy: CountingProxy) -> ThreadingHTTPServer:
    class Forward(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with proxy.lock:
                proxy.paths.append(self.path)
            headers = {k: v for k, v in self.headers.items() if k.lower() == "authorization"}
            request = urllib.request.Request(
                f"http://127.0.0.1:{proxy.target}{self.path}", headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as answer:
                    status, body = answer.status, answer.read()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    proxy.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Gateway:
    url: str
    proxy: CountingProxy


@pytest.fixture(scope="module")
def gateway(system: System) -> Iterator[Gateway]:
    """``python -m itinerant.gateway`` with callers alice and bob, reading the view through the
    counting proxy."""
    proxy = CountingProxy(system.settings.coordinator_http_port)
    server = serve_proxy(proxy)
    port = free_port()
    data_dir = system.settings.data_dir / "a2a-callers"
    log = system.settings.data_dir / "logs" / "gateway-callers.log"
    env = {
        **os.environ,
        **system.settings.to_env(),
        "ITINERANT_DATA_DIR": str(data_dir),
        "ITINERANT_KEYS_DIR": str(keys_dir(system.settings)),
        "ITINERANT_GATEWAY_PORT": str(port),
        "ITINERANT_GATEWAY_TOKENS": json.dumps({"alice": ALICE, "bob": BOB}),
        "ITINERANT_COORDINATOR_HTTP_PORT": str(proxy.port),
    }
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "itinerant.gateway"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    ready = data_dir / "run" / "gateway.ready"
    deadline = time.monotonic() + 30
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gateway did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    try:
        yield Gateway(f"http://127.0.0.1:{port}/", proxy)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        server.shutdown()


@pytest.fixture
async def alice() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=30) as c:
        yield c


@pytest.fixture
async def bob() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {BOB}"}, timeout=30) as c:
        yield c


async def rpc(http: httpx.AsyncClient, url: str, method: str, task_id: str) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 9, "method": method, "params": {"id": task_id}}
    reply = await http.post(url, json=body, headers=V1)
    assert reply.status_code == 200, reply.text
    loaded: dict[str, Any] = reply.json()
    return loaded


async def wait_state(client: Client, task_id: str, wanted: TaskState, timeout_s: float) -> Task:
    deadline = time.monotonic() + timeout_s
    while True:
        task = await get(client, task_id)
        if task.status.state == wanted:
            return task
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} is {task.status.state}, not {wanted}, after {timeout_s}s")
        await asyncio.sleep(0.1)


async def quiet(proxy: CountingProxy, saga_id: str, quiet_s: float, timeout_s: float) -> int:
    """The count of view reads of ``saga_id`` once it has not grown for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    count, since = proxy.count(saga_id), time.monotonic()
    while time.monotonic() - since < quiet_s:
        assert time.monotonic() < deadline, f"the view is read on and on ({count} reads)"
        await asyncio.sleep(0.05)
        if proxy.count(saga_id) != count:
            count, since = proxy.count(saga_id), time.monotonic()
    return count


def approve(system: System, saga_id: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "itinerant.cli.main", "approvals", "approve", saga_id,
         "--why", "checked", "--as", "operator"],
        capture_output=True, text=True, timeout=60,
        env={**system.settings.to_env(), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


async def test_a_caller_cannot_get_or_cancel_another_callers_task(
    system: System,
    gateway: Gateway,
    alice: httpx.AsyncClient,
    bob: httpx.AsyncClient,
) -> None:
    _card, alices = await a2a_client(alice, gateway.url, streaming=False)
    _card, bobs = await a2a_client(bob, gateway.url, streaming=False)
    _card, bobs_streams = await a2a_client(bob, gateway.url, streaming=True)
    task = await send(alices, user_message(data_part(trip())))
    await wait_state(alices, task.id, TaskState.TASK_STATE_INPUT_REQUIRED, 60)
    unknown = await rpc(bob, gateway.url, "GetTask", "no-such-task")
    assert unknown["error"]["code"] == -32001
    for method in ("GetTask", "CancelTask", "GetTask"):
        assert await rpc(bob, gateway.url, method, task.id) == unknown  # word for word
    with pytest.raises(TaskNotFoundError):
        async for _event in bobs_streams.subscribe(SubscribeToTaskRequest(id=task.id)):
            pass
    still = await get(alices, task.id)  # untouched by bob's cancel
    assert still.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    assert still.id == task.id and not still.artifacts
    # ListTasks: each caller's own tasks only
    bobs_task = await send(bobs, user_message(data_part(trip())))
    listed = await alices.list_tasks(ListTasksRequest())
    ids = [t.id for t in listed.tasks]
    assert task.id in ids and bobs_task.id not in ids
    waiting = await alices.list_tasks(
        ListTasksRequest(status=TaskState.TASK_STATE_INPUT_REQUIRED, page_size=1)
    )
    assert len(waiting.tasks) == 1 and waiting.page_size == 1
    assert all(t.status.state == TaskState.TASK_STATE_INPUT_REQUIRED for t in waiting.tasks)
    bobs_ids = [t.id for t in (await bobs.list_tasks(ListTasksRequest())).tasks]
    assert bobs_task.id in bobs_ids and task.id not in bobs_ids


async def test_the_owners_cancel_is_taken_and_names_the_owner(
    system: System, gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    _card, alices = await a2a_client(alice, gateway.url, streaming=False)
    _card, alices_streams = await a2a_client(alice, gateway.url, streaming=True)
    task = await send(alices, user_message(data_part(trip())))
    await wait_state(alices, task.id, TaskState.TASK_STATE_INPUT_REQUIRED, 60)
    followed: list[StreamResponse] = []

    async def subscribe() -> None:
        async for event in alices_streams.subscribe(SubscribeToTaskRequest(id=task.id)):
            followed.append(copy(event))

    subscribed = asyncio.create_task(subscribe())
    deadline = time.monotonic() + 15
    while not followed:  # SubscribeToTask answers with the task first
        assert not subscribed.done() and time.monotonic() < deadline, "no task from subscribe"
        await asyncio.sleep(0.05)
    assert followed[0].task.status.state == TaskState.TASK_STATE_INPUT_REQUIRED
    cancelled = await alices.cancel_task(CancelTaskRequest(id=task.id))
    assert "cancel requested" in text_of(cancelled.status.message)
    done = await poll_task(alices, task.id, timeout_s=20)
    assert done.status.state == TaskState.TASK_STATE_CANCELED, text_of(done.status.message)
    await asyncio.wait_for(subscribed, 20)  # the subscription ends with the task
    assert followed[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
    with system.db("coordinator") as conn:
        saga = repository.load(conn, task.id)
    assert saga is not None and saga.customer == "alice"
    asked = [t.detail for t in saga.timeline if t.event == "discard_requested"]
    assert asked and "alice (via gateway)" in asked[0]  # the verified delegate and its caller


async def test_a_stream_is_fed_by_the_topics_not_by_polling_the_view(
    system: System, gateway: Gateway, alice: httpx.AsyncClient
) -> None:
    _card, client = await a2a_client(alice, gateway.url, streaming=True)
    updates: list[StreamResponse] = []

    async def collect() -> None:
        request = SendMessageRequest(message=user_message(data_part(trip())))
        async for event in client.send_message(request):
            updates.append(copy(event))

    streaming = asyncio.create_task(collect())
    deadline = time.monotonic() + 60
    while not any(
        u.status_update.status.state == TaskState.TASK_STATE_INPUT_REQUIRED for u in updates
    ):
        assert not streaming.done(), f"the stream ended early: {updates}"
        assert time.monotonic() < deadline, "the stream never showed the approval wait"
        await asyncio.sleep(0.05)
    assert updates[0].HasField("task")
    saga_id = updates[0].task.id
    # The saga waits for its approval: once the records that brought it there are read, nothing
    # happens on the mesh, so the open stream reads nothing. (A poller reads the view several
    # times a second and would never fall quiet.)
    at_gate = await quiet(gateway.proxy, saga_id, quiet_s=2.0, timeout_s=15)
    await asyncio.sleep(1.5)  # a span of time in which nothing may happen, not a wait for one
    assert gateway.proxy.count(saga_id) == at_gate
    approve(system, saga_id)
    await asyncio.wait_for(streaming, 60)
    assert updates[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    statuses = [u for u in updates if u.HasField("status_update")]
    reads = gateway.proxy.count(saga_id)
    assert reads <= 2 * len(statuses) + 4, f"{reads} view reads for {len(statuses)} updates"
