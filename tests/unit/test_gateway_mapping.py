"""The gateway's pure parts: A2A message -> trip request, saga view + result -> A2A task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from a2a.types import (
    DataPart,
    FilePart,
    FileWithUri,
    Message,
    MessageSendParams,
    Part,
    Role,
    TaskState,
    TextPart,
)

from itinerant.gateway import inbound, tasks

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"


def params(*parts: Any, metadata: dict[str, Any] | None = None) -> MessageSendParams:
    return MessageSendParams(
        message=Message(
            role=Role.user,
            message_id="m1",
            parts=[Part(root=p) for p in parts],
            metadata=metadata,
        )
    )


def trip() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / "trip.json").read_text())
    return raw


def test_data_part_is_the_request() -> None:
    request = inbound.trip_request(params(DataPart(data=trip())))
    assert request.origin == "MAD" and request.traveller.name == "Ada Lovelace"
    assert request.max_hops is None and request.deadline_s is None


def test_text_part_becomes_free_text_with_traveller_from_metadata() -> None:
    request = inbound.trip_request(
        params(TextPart(text="Rome from London"), metadata={"itinerant": {"traveller": "Al"}})
    )
    assert request.text == "Rome from London" and request.traveller.name == "Al"
    default = inbound.trip_request(params(TextPart(text="Rome from London")))
    assert default.traveller.name == inbound.DEFAULT_TRAVELLER


def test_json_sent_as_text_is_read_as_a_request() -> None:
    request = inbound.trip_request(params(TextPart(text=json.dumps(trip()))))
    assert request.destination == "LIS"


def test_budget_from_metadata_is_capped_and_never_raises_the_request() -> None:
    request = inbound.trip_request(
        params(
            DataPart(data={**trip(), "max_hops": 5}),
            metadata={"itinerant": {"max_hops": 500, "deadline_s": 99_999}},
        )
    )
    assert request.max_hops == 5  # the request's own, lower limit stays
    assert request.deadline_s == inbound.MAX_DEADLINE_S
    capped = inbound.trip_request(
        params(DataPart(data=trip()), metadata={"itinerant": {"max_hops": 500}})
    )
    assert capped.max_hops == inbound.MAX_HOPS


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (params(DataPart(data={"origin": "MAD"})), "traveller"),
        (params(DataPart(data={**trip(), "origin": "madrid"})), "origin"),
        (params(DataPart(data={**trip(), "max_hops": 500})), "max_hops"),
        (params(DataPart(data={**trip(), "surprise": 1})), "surprise"),
        (params(TextPart(text="   ")), "no content"),
        (params(DataPart(data=trip()), DataPart(data=trip())), "one data part"),
        (params(FilePart(file=FileWithUri(uri="https://x/y.json"))), "file parts"),
        (params(DataPart(data=trip()), metadata={"itinerant": {"max_hops": "x"}}), "max_hops"),
        (params(DataPart(data=trip()), metadata={"itinerant": {"deadline_s": 0}}), "deadline_s"),
        (params(DataPart(data=trip()), metadata={"itinerant": {"hops": 1}}), "unknown"),
        (params(DataPart(data=trip()), metadata={"itinerant": 3}), "must be an object"),
    ],
)
def test_invalid_messages_say_what_is_wrong(message: MessageSendParams, expected: str) -> None:
    with pytest.raises(inbound.InvalidInput, match=expected):
        inbound.trip_request(message)


def test_traceparent_is_taken_only_when_well_formed() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert inbound.traceparent({"traceparent": good, "tracestate": "a=b"}) == (good, "a=b")
    assert inbound.traceparent({"traceparent": "nonsense"}) == (None, None)
    zeros = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
    assert inbound.traceparent({"traceparent": zeros}) == (None, None)
    assert inbound.traceparent({}) == (None, None)


def saga(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "saga_id": "s1",
        "state": state,
        "updated_at": "2027-01-01T00:00:00+00:00",
        "deadline": "2027-01-01T00:02:00+00:00",
        "timeline": [
            {"at": "2027-01-01T00:00:00+00:00", "event": "started", "detail": "dispatched"},
            {"at": "2027-01-01T00:00:01+00:00", "event": "step_completed", "detail": "planner"},
        ],
        "steps": [],
        **extra,
    }


RESULT = {
    "saga_id": "s1",
    "status": "completed",
    "itinerary": {"confirmation": {"reference": "R1", "total_usd": 10.0, "text": "Booked!"}},
    "steps": [],
    "duration_ms": 12.0,
}


@pytest.mark.parametrize(
    ("state", "extra", "expected"),
    [
        ("running", {}, TaskState.working),
        ("parked", {"reason": "handler_error", "error": "boom"}, TaskState.working),
        ("compensating", {"reason": "sold_out"}, TaskState.working),
        ("awaiting_approval", {}, TaskState.input_required),
        ("completed", {}, TaskState.completed),
        ("compensated", {"reason": "sold_out"}, TaskState.failed),
        ("compensated", {"reason": "discarded", "error": tasks.CANCEL_WHY}, TaskState.canceled),
        ("compensated", {"reason": "discarded", "error": "by operator"}, TaskState.failed),
        ("failed", {"error": "compensation failed"}, TaskState.failed),
        ("rejected", {"reason": "invalid_request"}, TaskState.rejected),
        ("something_new", {}, TaskState.unknown),
    ],
)
def test_saga_states_map_to_task_states(
    state: str, extra: dict[str, Any], expected: TaskState
) -> None:
    assert tasks.task_state(saga(state, **extra)) == expected


def test_parked_says_why_and_who_acts() -> None:
    text = tasks.status_text(saga("parked", reason="handler_error", error="boom"))
    assert "parked" in text and "handler_error: boom" in text and "operator" in text


def test_completed_task_carries_the_itinerary_and_confirmation() -> None:
    task = tasks.task(saga("completed"), RESULT, "c1")
    assert task.id == "s1" and task.context_id == "c1"
    assert task.status.state == TaskState.completed
    assert task.artifacts is not None
    parts = [p.root for p in task.artifacts[0].parts]
    assert isinstance(parts[0], DataPart) and parts[0].data == RESULT["itinerary"]
    assert isinstance(parts[1], TextPart) and parts[1].text == "Booked!"
    assert task.status.message is not None
    status = task.status.message.parts[0].root
    assert isinstance(status, TextPart) and "Booked!" in status.text


def test_no_artifact_before_the_result_or_when_not_completed() -> None:
    assert tasks.task(saga("completed"), None, "c").artifacts is None
    assert tasks.task(saga("compensated", reason="sold_out"), RESULT, "c").artifacts is None


def test_progress_events_follow_the_timeline_in_order_and_only_once() -> None:
    running = saga("running")
    first = tasks.progress_events(running, 0, "c")
    assert [e.metadata["itinerant"]["index"] for e in first if e.metadata] == [0, 1]
    assert all(e.status.state == TaskState.working and not e.final for e in first)
    assert tasks.progress_events(running, 2, "c") == []
    done = tasks.final_events(saga("completed"), RESULT, "c")
    assert [type(e).__name__ for e in done] == ["TaskArtifactUpdateEvent", "TaskStatusUpdateEvent"]
    last = done[-1]
    assert getattr(last, "final", False) is True


def test_result_only_task_for_a_refused_request() -> None:
    result = {"saga_id": "s9", "status": "rejected", "reason": "invalid_request", "steps": []}
    task = tasks.result_only_task(result, "s9")
    assert task.status.state == TaskState.rejected
