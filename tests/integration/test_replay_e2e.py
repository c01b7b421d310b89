"""Replay end to end: a dependency that keeps failing dead-letters a step (retries exhausted) and
parks its saga; the operator sees why and how to resume (`itinerant status`), fixes the cause,
replays (`itinerant dlq replay --saga`), and the saga completes, with one trace across the
original attempt and the replay (`itinerant trace --json`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import Broker, System, poll_until, start_system
from .failure_helpers import RawReader, itinerant, saga_view

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    # Every inventory call fails, two tries each. Searches run in turn (not in parallel), so
    # the flights search is the one step that parks the saga.
    running = start_system(
        broker,
        tmp_path_factory.mktemp("replay"),
        fault_inventory_rate=1.0,
        max_attempts=2,
        parallel_search=False,
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def walk(nodes: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for node in nodes:
        yield node
        yield from walk(node["children"])


def restart_with(system: System, service: str, env: dict[str, str]) -> None:
    """Restart ``service`` with ``env`` added (what an operator's fix and redeploy does)."""
    supervisor = system.supervisor
    supervisor.extra_env.update(env)
    ready = supervisor.run_dir / f"{service}.ready"
    killed_at = time.time()
    assert supervisor.kill(service) is not None
    restarted = poll_until(
        lambda: supervisor.supervise_once() == [service] or supervisor.procs[service].alive(),
        30,
        f"{service} restarted",
    )
    assert restarted
    poll_until(
        lambda: ready.exists() and ready.stat().st_mtime > killed_at,
        60,
        f"{service} ready again",
    )


def test_dead_letter_fix_replay_completes_with_one_trace(system: System) -> None:
    settings = system.settings
    saga_id = system.publish("trip.json")

    parked = poll_until(
        lambda: (v := saga_view(settings, saga_id)) and v["state"] == "parked" and v,
        60,
        "the saga parked",
    )
    assert parked["reason"] == "retries_exhausted", parked
    assert "inventory" in parked["error"]
    letter = next(
        s
        for s in system.dead_letters(lambda s: s.key == saga_id)
        if s.headers["x-dlq-reason"] == "retries_exhausted"
    )
    assert letter.headers["x-dlq-service"] == "flights"
    assert letter.headers["x-dlq-attempts"] == "2"
    assert letter.headers["x-dlq-origin-topic"] == settings.agent_topic("flights")

    # The operator's view: parked, why, and the command that resumes it.
    status = itinerant(settings, "status", saga_id)
    assert status.returncode == 0, status.stderr
    assert "parked" in status.stdout and "retries_exhausted" in status.stdout, status.stdout
    assert f"itinerant dlq replay --saga {saga_id}" in " ".join(status.stdout.split()), (
        status.stdout
    )
    listed = itinerant(settings, "dlq", "list", "--json", "--saga", saga_id)
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)
    # One entry, even when a copy of the step's message reached flights too.
    assert [(e["reason"], e["status"]) for e in entries] == [("retries_exhausted", "pending")], (
        json.dumps(entries, indent=1)
    )

    # Fix the cause: the inventory answers again once flights runs with the fault turned off.
    restart_with(system, "flights", {"ITINERANT_FAULT_INVENTORY_RATE": "0"})
    still = saga_view(settings, saga_id)
    assert still is not None and still["state"] == "parked"  # nothing resumes by itself

    replay = itinerant(settings, "dlq", "replay", "--saga", saga_id)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    result = system.results({saga_id}, timeout_s=60)[saga_id]
    assert result["status"] == "completed", result
    assert result["output"]["confirmation"]["reference"]

    view = saga_view(settings, saga_id)
    assert view is not None and view["state"] == "completed"
    events = [t["event"] for t in view["timeline"]]
    assert events.index("step_deadlettered") < events.index("resumed") < events.index("completed")
    replayed = json.loads(itinerant(settings, "dlq", "list", "--json", "--saga", saga_id).stdout)
    assert [(e["status"], e["replays"]) for e in replayed] == [("replayed", 1)]

    # Exactly one booking, made by the replay.
    with RawReader(settings, [settings.results_topic]) as reader:
        reader.until(lambda rs: any(r.key_text == saga_id for r in rs), 30, "the result")
        assert [r.json()["status"] for r in reader.records if r.key_text == saga_id] == [
            "completed"
        ]
    rows = (
        system.db("flights")
        .execute("SELECT DISTINCT booking_id FROM flight_bookings WHERE saga_id = ?", (saga_id,))
        .fetchall()
    )
    assert len(rows) == 1

    # One trace: the failed tries, the replay (linked to the original) and the rest of the saga.
    def one_trace() -> dict[str, Any] | None:
        run = itinerant(settings, "trace", saga_id, "--json")
        if run.returncode != 0:
            return None
        body: dict[str, Any] = json.loads(run.stdout)
        spans = [n for t in body["traces"] for n in walk(t["roots"])]
        done = any(n["service"] == "notifier" and n["kind"] == "CONSUMER" for n in spans) and any(
            n["attributes"].get("itinerant.replay_count") == 1 for n in spans
        )
        return body if done else None

    body = poll_until(one_trace, 30, "the saga's trace, replay included", interval_s=0.5)
    assert len(body["traces"]) == 1, [t["trace_id"] for t in body["traces"]]
    spans = list(walk(body["traces"][0]["roots"]))
    failed = [
        n
        for n in spans
        if n["service"] == "flights"
        and n["status"] == "ERROR"
        and n["attributes"].get("error.type") == "retries_exhausted"
    ]
    assert len(failed) == 1, [(n["service"], n["status"]) for n in spans]
    assert len([e for e in failed[0]["events"] if e["name"] == "retry"]) == 1  # 2 tries, 1 retry
    replays = [n for n in spans if n["attributes"].get("itinerant.replay_count") == 1]
    assert [n["service"] for n in replays] == ["flights"]
    assert [link["attributes"].get("itinerant.link") for link in replays[0]["links"]] == [
        "replay_of"
    ]
    assert replays[0]["status"] != "ERROR"
    assert any(n["service"] == "notifier" for n in spans)
    assert any(n["service"] == "coordinator" for n in spans)
