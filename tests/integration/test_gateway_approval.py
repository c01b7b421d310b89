"""An approval round trip seen over A2A: a trip over the approval threshold shows as
`input-required`, an operator approves it with `itinerant approvals approve`, and the A2A task
completes with its itinerary. (The gateway started by the supervisor, with the caller token
`itinerant up` generated.)"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from a2a.client import A2ACardResolver, ClientConfig, ClientFactory
from a2a.types import GetTaskRequest, TaskState

from .conftest import Broker, System, start_system
from .test_gateway import data_part, send, trip, user_message

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(broker, tmp_path_factory.mktemp("approval"), approval_threshold_usd=100)
    try:
        yield running
    finally:
        running.supervisor.stop()


@pytest.fixture
async def http(system: System) -> AsyncIterator[httpx.AsyncClient]:
    token = system.settings.gateway_tokens["user"].get_secret_value()
    async with httpx.AsyncClient(
        timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as client:
        yield client


async def wait_state(client: object, task_id: str, wanted: TaskState, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        task = await client.get_task(GetTaskRequest(id=task_id))  # type: ignore[attr-defined]
        if task.status.state == wanted:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"task {task_id} is {task.status.state}, not {wanted}, after {timeout_s}s")
        await asyncio.sleep(0.1)


async def test_approval_round_trip_over_a2a(system: System, http: httpx.AsyncClient) -> None:
    url = f"http://127.0.0.1:{system.settings.gateway_port}/"
    card = await A2ACardResolver(http, url).get_agent_card()
    client = ClientFactory(ClientConfig(streaming=False, polling=True, httpx_client=http)).create(
        card
    )
    request = {**trip(), "request_id": str(uuid.uuid4())}
    task = await send(client, user_message(data_part(request)))
    await wait_state(client, task.id, TaskState.TASK_STATE_INPUT_REQUIRED, 60)
    rows = (
        system.db("flights")
        .execute("SELECT COUNT(*) FROM flight_bookings WHERE saga_id = ?", (task.id,))
        .fetchone()
    )
    assert tuple(rows) == (0,)  # nothing is booked while the approval is pending
    approve = subprocess.run(
        [
            sys.executable,
            "-m",
            "itinerant.cli.main",
            "approvals",
            "approve",
            task.id,
            "--why",
            "checked with the traveller",
            "--as",
            "operator",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**system.settings.to_env(), "PATH": "/usr/bin:/bin"},
    )
    assert approve.returncode == 0, approve.stderr
    await wait_state(client, task.id, TaskState.TASK_STATE_COMPLETED, 60)
    done = await client.get_task(GetTaskRequest(id=task.id))
    assert done.artifacts, "a completed task carries the itinerary"
