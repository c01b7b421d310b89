"""Scatter-gather, joins and group timeouts on a real broker, with the diagnostic probe agent as
the entry step (its route comes from the request), every service a real process."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from itinerant.security.tokens import operator_headers
from itinerant.wire.envelope import Envelope, InRecord, OutMessage
from services.contracts.trip import Traveller, TripRequest
from services.mesh import AGENTS

from .conftest import Broker, System, poll_until, start_system

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(
        broker,
        tmp_path_factory.mktemp("routing"),
        agents=[*(a.name for a in AGENTS), "probe"],
        entry_step="probe.plan",
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def step(action: str) -> dict[str, str]:
    return {"agent": "probe", "action": action}


def group(*actions: str, join: str = "all", timeout_s: float = 20) -> dict[str, Any]:
    return {"parallel": [step(a) for a in actions], "join": join, "timeout_s": timeout_s}


def run(system: System, route: list[dict[str, Any]], delay_ms: int = 0) -> str:
    spec = json.dumps({"route": route, "delay_ms": delay_ms})
    return system.publish(TripRequest(traveller=Traveller(name="Probe"), text=spec))


def effects(system: System, saga_id: str) -> list[tuple[str, str]]:
    rows = (
        system.db("probe")
        .execute(
            "SELECT action, status FROM probe_effects WHERE saga_id = ? ORDER BY action, status",
            (saga_id,),
        )
        .fetchall()
    )
    return [(r[0], r[1]) for r in rows]


def saga_view(system: System, saga_id: str) -> dict[str, Any]:
    """The coordinator's view of the saga; an empty timeline while it does not know it yet."""
    url = f"http://127.0.0.1:{system.settings.coordinator_http_port}/sagas/{saga_id}"
    request = urllib.request.Request(url, headers=operator_headers(system.settings))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            loaded: dict[str, Any] = json.loads(response.read())
            return loaded
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {"timeline": []}
        raise


def test_all_join_merges_branch_outputs_in_order(system: System) -> None:
    saga_id = run(system, [group("fast", "slow"), step("fast")], delay_ms=300)
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "completed", result
    itinerary = result["output"]
    assert itinerary["fast"] and itinerary["slow"]  # both branch outputs survived the merge
    branches = [(s["index"], s["branch"], s["action"]) for s in result["steps"] if s["index"] == 1]
    assert branches == [(1, 0, "fast"), (1, 1, "slow")]
    saga = saga_view(system, saga_id)
    assert [t["event"] for t in saga["timeline"]].count("joined") == 1


def test_failing_branch_under_all_compensates_the_others(system: System) -> None:
    saga_id = run(system, [step("fast"), group("slow", "fail")], delay_ms=200)
    result = system.results({saga_id})[saga_id]
    assert (result["status"], result["reason"]) == ("compensated", "probe_failed")
    # The first step's effect, and the slow branch's effect whenever it lands, are undone.
    poll_until(
        lambda: effects(system, saga_id) == [("fast", "cancelled"), ("slow", "cancelled")],
        30,
        "both probe effects to be cancelled",
    )


def test_first_join_does_not_wait_for_the_slow_branch(system: System) -> None:
    saga_id = run(system, [group("fast", "slow", join="first")], delay_ms=4000)
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "completed"
    # Joined on the fast branch alone: the slow branch's output is not in the result.
    assert result["output"]["fast"] and result["output"]["slow"] is None
    # The losing branch booked something when it finished: it is compensated.
    poll_until(
        lambda: effects(system, saga_id) == [("fast", "held"), ("slow", "cancelled")],
        30,
        "the losing branch's effect to be cancelled",
    )


def test_quorum_join(system: System) -> None:
    saga_id = run(system, [group("fast", "fast", "slow", join="quorum:2")], delay_ms=4000)
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "completed"
    assert [s["branch"] for s in result["steps"] if s["index"] == 1] == [0, 1]


def test_group_timeout_compensates(system: System) -> None:
    saga_id = run(system, [group("fast", "slow", timeout_s=1.5)], delay_ms=6000)
    result = system.results({saga_id}, timeout_s=30)[saga_id]
    assert (result["status"], result["reason"]) == ("compensated", "group_timeout")
    poll_until(
        lambda: effects(system, saga_id) == [("fast", "cancelled"), ("slow", "cancelled")],
        30,
        "the fast branch undone at once and the slow one when it lands",
    )


def test_duplicate_branch_result_is_ignored(system: System) -> None:
    saga_id = run(system, [group("fast", "slow"), step("fast")], delay_ms=1500)
    events = system.collect(
        [system.settings.events_topic],
        lambda seen: any(s.key == saga_id and (s.value or {}).get("branch") == 0 for s in seen),
        30,
        "the fast branch's step_completed",
    )
    original = next(s for s in events if s.key == saga_id and (s.value or {}).get("branch") == 0)
    # The same branch result again, under a new message id (as a second runtime would send it).
    headers = [(k, v.encode()) for k, v in original.headers.items() if k != "ce_id"]
    headers.append(("ce_id", str(uuid.uuid4()).encode()))
    body = json.dumps(original.value).encode()
    Envelope.from_record(InRecord("x", 0, 0, None, body, headers))  # still a valid event
    again = system.sign(OutMessage(system.settings.events_topic, saga_id.encode(), body, headers))
    system.publish_raw(again.topic, again.value, again.key, again.headers)
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "completed"
    saga = saga_view(system, saga_id)
    assert [t["event"] for t in saga["timeline"]].count("joined") == 1
    assert effects(system, saga_id) == [("fast", "held"), ("fast", "held"), ("slow", "held")]


def test_coordinator_killed_between_branch_results_joins_once(system: System) -> None:
    saga_id = run(system, [group("fast", "slow"), step("fast")], delay_ms=3000)
    poll_until(
        lambda: any(
            t["event"] == "branch_completed" for t in saga_view(system, saga_id)["timeline"]
        ),
        30,
        "the coordinator to record the first branch",
    )
    assert system.supervisor.kill("coordinator") is not None
    deadline = time.monotonic() + 60
    while system.supervisor.procs["coordinator"].restarts == 0 and time.monotonic() < deadline:
        system.supervisor.supervise_once()
        time.sleep(0.05)
    result = system.results({saga_id}, timeout_s=90)[saga_id]
    assert result["status"] == "completed"
    saga = saga_view(system, saga_id)
    assert [t["event"] for t in saga["timeline"]].count("joined") == 1
    # Exactly one effect per step: the step after the join ran once.
    assert effects(system, saga_id) == [("fast", "held"), ("fast", "held"), ("slow", "held")]
