"""The request path end to end in memory: real processors and coordinator, no broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from itinerant.testing import InMemoryMesh

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"


def example(name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((EXAMPLES / name).read_text())
    return loaded


async def test_trip_completes_with_confirmation(mesh: InMemoryMesh) -> None:
    saga_id = mesh.publish_request(example("trip.json"))
    await mesh.run()
    result = mesh.results()[saga_id]
    assert result["status"] == "completed", result
    itinerary = result["output"]
    assert itinerary["validation"]["ok"] is True
    assert itinerary["confirmation"]["total_usd"] == pytest.approx(
        itinerary["flight"]["total_usd"] + itinerary["hotel"]["total_usd"]
    )
    assert [(s["agent"], s["action"], s["branch"]) for s in result["steps"]] == [
        ("planner", "plan", None),
        ("flights", "search", 0),
        ("hotels", "search", 1),
        ("validator", "run", None),
        ("approval", "gate", None),
        ("flights", "book", None),
        ("hotels", "book", None),
        ("notifier", "run", None),
    ]


async def test_sold_out_hotel_cancels_the_flight(mesh: InMemoryMesh) -> None:
    saga_id = mesh.publish_request(example("sold-out.json"))
    await mesh.run()
    result = mesh.results()[saga_id]
    assert result["status"] == "compensated"
    assert result["reason"] == "sold_out"
    rows = (
        mesh.stores["flights"]
        .connection.execute("SELECT status FROM flight_bookings WHERE saga_id = ?", (saga_id,))
        .fetchall()
    )
    assert [r[0] for r in rows] == ["cancelled", "cancelled"]


async def test_day_trip_skips_the_hotel_steps_by_their_filter(mesh: InMemoryMesh) -> None:
    saga_id = mesh.publish_request(example("day-trip.json"))
    await mesh.run()
    result = mesh.results()[saga_id]
    assert result["status"] == "completed", result
    statuses = {(s["agent"], s["action"]): s["status"] for s in result["steps"]}
    assert statuses[("hotels", "search")] == "skipped"
    assert statuses[("hotels", "book")] == "skipped"
    assert statuses[("flights", "book")] == "completed"
    assert result["output"]["hotel"] is None
    rows = (
        mesh.stores["hotels"]
        .connection.execute("SELECT COUNT(*) FROM hotel_bookings WHERE saga_id = ?", (saga_id,))
        .fetchone()
    )
    assert tuple(rows) == (0,)


async def test_steps_without_side_effects_report_with_the_next_event(mesh: InMemoryMesh) -> None:
    """The validator (no side effect, an approval gate next) sends its forward only; the planner
    (a parallel group next), the searches (branches) and the bookings (side effects) each send a
    progress event. The coordinator records the validator from its visit in a later slip."""
    saga_id = mesh.publish_request(example("trip.json"))
    await mesh.run()
    assert mesh.results()[saga_id]["status"] == "completed"
    completed = [
        (json.loads(e.data)["agent"], json.loads(e.data)["action"])
        for e in mesh.envelopes(mesh.settings.events_topic)
        if e.type == "itinerant.saga.step_completed.v1" and e.saga_id == saga_id
    ]
    assert completed == [
        ("planner", "plan"),
        ("flights", "search"),
        ("hotels", "search"),
        ("flights", "book"),
        ("hotels", "book"),
        ("notifier", "run"),
    ]
    saga = mesh.saga(saga_id)
    assert saga is not None
    validator = [r for r in saga.steps if r.agent == "validator"]
    assert [(r.index, r.status.value) for r in validator] == [(2, "completed")]
    assert any(
        t.event == "step_completed" and "validator.run (reported with a later step)" in t.detail
        for t in saga.timeline
    )
