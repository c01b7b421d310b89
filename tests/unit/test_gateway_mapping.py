"""The gateway's pure parts: A2A message -> the mesh's request, saga view + result -> A2A task,
the mesh -> its agent card. Built with the travel mesh (services.mesh), the reference app."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from a2a.types import Message, Part, Role, SendMessageRequest, TaskState

from itinerant.gateway import inbound, tasks
from itinerant.gateway.card import agent_card, agent_cards, extended_card
from itinerant.gateway.config import GatewayConfig
from itinerant.gateway.proto import from_struct, from_value, struct, value
from itinerant.mesh import Mesh, Skill
from itinerant.security.tokens import Principal
from itinerant.wire.request import Request
from services.contracts.trip import TripRequest
from services.mesh import mesh as travel

EXAMPLES = Path(__file__).parents[2] / "examples" / "requests"
#: The travel mesh reading no plain words (and so no metadata beyond the budget).
NO_TEXT = dataclasses.replace(travel, from_text=None)
CONFIG = GatewayConfig(
    host="127.0.0.1",
    port=1,
    max_body_bytes=1024,
    public_url="http://gw/",
    coordinator_url="http://c",
)


def DataPart(data: Any) -> Part:
    return Part(data=value(data))


def TextPart(text: str) -> Part:
    return Part(text=text)


def params(*parts: Part, metadata: dict[str, Any] | None = None) -> SendMessageRequest:
    message = Message(role=Role.ROLE_USER, message_id="m1", parts=parts)
    if metadata is not None:
        message.metadata.CopyFrom(struct(metadata))
    return SendMessageRequest(message=message)


def trip() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((EXAMPLES / "trip.json").read_text())
    return raw


def trip_request(message: SendMessageRequest, mesh: Mesh = travel) -> TripRequest:
    request = inbound.read_request(message, mesh)
    assert isinstance(request, TripRequest)
    return request


def test_data_part_is_the_request() -> None:
    request = trip_request(params(DataPart(data=trip())))
    assert request.origin == "MAD" and request.traveller.name == "Ada Lovelace"
    assert request.max_hops is None and request.deadline_s is None


def test_text_part_is_read_by_the_mesh_with_the_metadata_as_options() -> None:
    request = trip_request(
        params(TextPart(text="Rome from London"), metadata={"itinerant": {"traveller": "Al"}})
    )
    assert request.text == "Rome from London" and request.traveller.name == "Al"
    default = trip_request(params(TextPart(text="Rome from London")))
    assert default.traveller.name == "A2A client"  # the travel mesh's from_text default


def test_from_text_gets_every_metadata_field_and_its_raw_request_is_validated() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def from_text(text: str, options: dict[str, Any]) -> dict[str, Any]:
        seen.append((text, options))
        return {"traveller": {"name": options["who"]}, "text": text}

    mesh = dataclasses.replace(travel, from_text=from_text)
    request = trip_request(
        params(TextPart(text="  Rome  "), metadata={"itinerant": {"who": "Bo", "max_hops": 500}}),
        mesh,
    )
    assert seen == [("Rome", {"who": "Bo", "max_hops": 500})]
    assert request.traveller.name == "Bo" and request.max_hops == inbound.MAX_HOPS
    wrong = dataclasses.replace(travel, from_text=lambda text, options: {"text": text})
    with pytest.raises(inbound.InvalidInput, match="traveller"):
        inbound.read_request(params(TextPart(text="Rome")), wrong)


def test_a_mesh_without_from_text_refuses_plain_words_but_reads_json_text() -> None:
    with pytest.raises(inbound.InvalidInput, match="plain words"):
        inbound.read_request(params(TextPart(text="Rome from London")), NO_TEXT)
    request = trip_request(params(TextPart(text=json.dumps(trip()))), NO_TEXT)
    assert request.destination == "LIS"
    with pytest.raises(inbound.InvalidInput, match="unknown"):
        inbound.read_request(
            params(DataPart(data=trip()), metadata={"itinerant": {"traveller": "x"}}), NO_TEXT
        )
    # a mesh that reads text takes any option (for a data part, nobody reads it)
    assert (
        trip_request(
            params(DataPart(data=trip()), metadata={"itinerant": {"traveller": "x", "hops": 1}})
        ).traveller.name
        == "Ada Lovelace"
    )


def test_the_request_model_is_the_mesh_s() -> None:
    class Echo(Request):
        words: str

    agent = travel.agents[0]
    echo = Mesh("echo", agents=[agent], entry=travel.entry, request_model=Echo)
    request = inbound.read_request(params(DataPart(data={"words": "hi"})), echo)
    assert isinstance(request, Echo) and request.words == "hi"
    with pytest.raises(inbound.InvalidInput, match="not a valid echo request: words"):
        inbound.read_request(params(DataPart(data={"origin": "MAD"})), echo)


def test_json_sent_as_text_is_read_as_a_request() -> None:
    request = trip_request(params(TextPart(text=json.dumps(trip()))))
    assert request.destination == "LIS"


def test_budget_from_metadata_is_capped_and_never_raises_the_request() -> None:
    request = trip_request(
        params(
            DataPart(data={**trip(), "max_hops": 5}),
            metadata={"itinerant": {"max_hops": 500, "deadline_s": 99_999}},
        )
    )
    assert request.max_hops == 5  # the request's own, lower limit stays
    assert request.deadline_s == inbound.MAX_DEADLINE_S
    capped = trip_request(params(DataPart(data=trip()), metadata={"itinerant": {"max_hops": 500}}))
    assert capped.max_hops == inbound.MAX_HOPS
    assert inbound.limits(TripRequest) == (100, 3600.0) == (inbound.MAX_HOPS, 3600.0)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (params(DataPart(data={"origin": "MAD"})), "traveller"),
        (params(DataPart(data={**trip(), "origin": "madrid"})), "origin"),
        (params(DataPart(data={**trip(), "max_hops": 500})), "max_hops"),
        (params(DataPart(data={**trip(), "surprise": 1})), "surprise"),
        (params(TextPart(text="   ")), "no content"),
        (params(DataPart(data=trip()), DataPart(data=trip())), "one data part"),
        (params(Part(url="https://x/y.json")), "file parts"),
        (params(Part(raw=b"{}")), "file parts"),
        (params(DataPart(data=[1, 2])), "must hold an object"),
        (params(DataPart(data=trip()), metadata={"itinerant": {"max_hops": "x"}}), "max_hops"),
        (params(DataPart(data=trip()), metadata={"itinerant": {"deadline_s": 0}}), "deadline_s"),
        (params(DataPart(data=trip()), metadata={"itinerant": 3}), "must be an object"),
    ],
)
def test_invalid_messages_say_what_is_wrong(message: SendMessageRequest, expected: str) -> None:
    with pytest.raises(inbound.InvalidInput, match=expected):
        inbound.read_request(message, travel)


def test_the_card_is_the_mesh_s() -> None:
    card = agent_card(CONFIG, travel)
    assert card.name == "travel"
    assert [i.protocol_version for i in card.supported_interfaces] == ["1.0", "0.3"]
    assert [s.id for s in card.skills] == ["plan-trip", "book-trip", "refund"]
    book = card.skills[1]
    assert book.tags == ["travel", "booking", "saga"] and book.examples
    assert book.input_modes == ["application/json", "text/plain"]
    assert list(card.skills[2].examples) == []
    assert card.description.startswith(travel.description)
    assert travel.request_help in card.description
    assert "metadata.itinerant.max_hops (<= 100)" in card.description
    assert (
        "deadline_s (<= 3600)" in card.description
        and "The task id is the saga id" in card.description
    )
    assert not card.security_schemes and card.capabilities.streaming is True


def test_a_mesh_with_no_skills_or_help_still_has_a_card() -> None:
    bare = dataclasses.replace(
        travel, name="bare", description="", request_help="", skills=(), from_text=None
    )
    card = agent_card(CONFIG, bare)
    assert card.name == "bare" and [s.id for s in card.skills] == ["bare"]
    assert "itinerant.request.v1" in card.description and "plain words" not in card.description
    custom = dataclasses.replace(travel, skills=[Skill("x", "X", "does x", tags=("t",))])
    assert [(s.id, s.tags) for s in agent_card(CONFIG, custom).skills] == [("x", ["t"])]


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


OUTPUT = {"confirmation": {"reference": "R1", "total_usd": 10.0, "text": "Booked!"}}
RESULT = {
    "saga_id": "s1",
    "status": "completed",
    "output": OUTPUT,
    "steps": [
        {"index": 0, "agent": "planner", "action": "plan", "status": "completed"},
        {"index": 1, "agent": "flights", "action": "book", "status": "completed"},
    ],
    "duration_ms": 12.0,
}


@pytest.mark.parametrize(
    ("state", "extra", "expected"),
    [
        ("running", {}, TaskState.TASK_STATE_WORKING),
        ("parked", {"reason": "handler_error", "error": "boom"}, TaskState.TASK_STATE_WORKING),
        ("compensating", {"reason": "sold_out"}, TaskState.TASK_STATE_WORKING),
        ("awaiting_approval", {}, TaskState.TASK_STATE_INPUT_REQUIRED),
        ("completed", {}, TaskState.TASK_STATE_COMPLETED),
        ("compensated", {"reason": "sold_out"}, TaskState.TASK_STATE_FAILED),
        (
            "compensated",
            {"reason": "discarded", "error": tasks.CANCEL_WHY},
            TaskState.TASK_STATE_CANCELED,
        ),
        (
            "compensated",
            {"reason": "discarded", "error": "by operator"},
            TaskState.TASK_STATE_FAILED,
        ),
        ("failed", {"error": "compensation failed"}, TaskState.TASK_STATE_FAILED),
        ("rejected", {"reason": "invalid_request"}, TaskState.TASK_STATE_REJECTED),
        ("something_new", {}, TaskState.TASK_STATE_UNSPECIFIED),
    ],
)
def test_saga_states_map_to_task_states(
    state: str, extra: dict[str, Any], expected: TaskState
) -> None:
    assert tasks.task_state(saga(state, **extra)) == expected


def test_parked_says_why_and_who_acts() -> None:
    text = tasks.status_text(saga("parked", reason="handler_error", error="boom"))
    assert "parked" in text and "handler_error: boom" in text and "operator" in text


def test_completed_task_carries_the_final_payload_and_a_line_from_its_result() -> None:
    task = tasks.task(saga("completed", output=OUTPUT), RESULT, "c1")
    assert task.id == "s1" and task.context_id == "c1"
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    [artifact] = task.artifacts
    assert artifact.artifact_id == "s1:output" and artifact.name == "output"
    parts = list(artifact.parts)
    assert parts[0].WhichOneof("content") == "data" and from_value(parts[0].data) == OUTPUT
    line = "2 steps completed in 12 ms (planner.plan, flights.book)"
    assert parts[1].text == line
    assert task.status.message.parts[0].text == f"completed: {line}"


def test_the_payload_from_the_result_when_the_view_has_none() -> None:
    task = tasks.task(saga("completed"), RESULT, "c")
    assert from_value(task.artifacts[0].parts[0].data) == OUTPUT
    alone = tasks.result_only_task(RESULT, "c")
    assert alone.status.state == TaskState.TASK_STATE_COMPLETED and alone.artifacts
    no_result = tasks.task(saga("completed", output=OUTPUT), None, "c")
    assert no_result.artifacts and len(no_result.artifacts[0].parts) == 1


def test_no_artifact_without_a_payload_or_when_not_completed() -> None:
    assert not tasks.task(saga("completed"), None, "c").artifacts
    assert not tasks.task(saga("completed"), {**RESULT, "output": None}, "c").artifacts
    failed = saga("compensated", reason="sold_out", output=OUTPUT)
    assert not tasks.task(failed, RESULT, "c").artifacts
    assert "completed steps undone: sold_out" in tasks.status_text(failed)


def test_progress_events_follow_the_timeline_in_order_and_only_once() -> None:
    running = saga("running")
    first = tasks.progress_events(running, 0, "c")
    assert [from_struct(e.metadata)["itinerant"]["index"] for e in first] == [0, 1]
    assert all(e.status.state == TaskState.TASK_STATE_WORKING for e in first)
    assert tasks.progress_events(running, 2, "c") == []
    done = tasks.final_events(saga("completed"), RESULT, "c")
    assert [type(e).__name__ for e in done] == ["TaskArtifactUpdateEvent", "TaskStatusUpdateEvent"]
    assert done[-1].status.state in tasks.FINAL_STATES  # A2A 1.0: a final state ends a stream


def test_result_only_task_for_a_refused_request() -> None:
    result = {"saga_id": "s9", "status": "rejected", "reason": "invalid_request", "steps": []}
    task = tasks.result_only_task(result, "s9")
    assert task.status.state == TaskState.TASK_STATE_REJECTED


def test_numbers_read_back_from_protobuf_are_ints_when_integral() -> None:
    """A2A 1.0 carries every number as a double; the mesh's models count in integers."""
    request = trip_request(params(DataPart(data={**trip(), "travellers": 2})))
    assert request.travellers == 2 and isinstance(request.travellers, int)
    assert from_value(value({"a": [1, 2.5, {"b": 3}], "c": None})) == {
        "a": [1, 2.5, {"b": 3}],
        "c": None,
    }


def test_a_card_per_agent_and_the_extended_card() -> None:
    cards = agent_cards(CONFIG, travel)
    assert set(cards) == {a.name for a in (*travel.agents, *travel.optional_agents)}
    flights = cards["flights"]
    assert flights.name == "travel/flights" and "flights.book" in [s.id for s in flights.skills]
    assert flights.supported_interfaces[0].url == "http://gw/"  # reached through the gateway
    mine = extended_card(CONFIG, travel, Principal("alice"))
    assert {"plan-trip", "flights.book", "hotels.book"} <= {s.id for s in mine.skills}
    assert "'alice'" in mine.description and "only your own tasks" in mine.description
    assert "operator" in extended_card(CONFIG, travel, Principal("ops", operator=True)).description
