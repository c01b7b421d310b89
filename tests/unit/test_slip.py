"""The routing slip (docs/wire-contract.md#the-routing-slip): cursor, dynamic routing, checks, and
its wire form."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from itinerant.errors import InvalidSlip, LoopDetected, MessageTooLarge, UnknownAgent
from itinerant.wire.slip import ParallelGroup, Slip, Step, Visit, linear

AT = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
AGENTS = ["planner", "flights", "hotels", "validator", "notifier"]


def trip_slip() -> Slip:
    return linear("planner", ("flights", "book"), ("hotels", "book"), "validator")


def test_linear_builds_steps_with_actions() -> None:
    slip = trip_slip()
    assert slip.next == 0
    assert slip.visited == []
    assert slip.steps[0] == Step(agent="planner", action="run")
    assert slip.steps[1] == Step(agent="flights", action="book")
    assert slip.agents() == ["planner", "flights", "hotels", "validator"]


def test_advanced_moves_cursor_and_records_visit_without_mutating() -> None:
    slip = trip_slip()
    moved = slip.advanced("planner", "m-1", AT)
    assert slip.next == 0 and slip.visited == []  # the original is unchanged
    assert moved.next == 1
    assert moved.current == Step(agent="flights", action="book")
    assert [(v.agent, v.id, v.at, v.skipped) for v in moved.visited] == [
        ("planner", "m-1", AT, False)
    ]
    skipped = moved.advanced("flights", "m-2", AT, skipped=True)
    assert skipped.next == 2
    assert skipped.visited[-1].skipped is True
    assert skipped.current == Step(agent="hotels", action="book")


def test_with_remaining_replaces_only_steps_after_the_current_one() -> None:
    slip = Slip(steps=[Step(agent="planner"), Step(agent="notifier")], next=0)
    routed = slip.with_remaining([Step(agent="flights", action="book"), Step(agent="validator")])
    assert routed.next == 0
    assert routed.agents() == ["planner", "flights", "validator"]
    # after the planner has moved on, rerouting keeps everything up to the new cursor
    later = routed.advanced("planner", "m1", AT).with_remaining([Step(agent="notifier")])
    assert later.agents() == ["planner", "flights", "notifier"]
    assert later.next == 1


def test_at_end_and_current_past_the_end() -> None:
    slip = linear("planner")
    assert not slip.at_end
    done = slip.advanced("planner", "m", AT)
    assert done.at_end
    with pytest.raises(InvalidSlip) as info:
        _ = done.current
    assert info.value.reason == "invalid_slip"
    assert "cursor 1" in str(info.value)
    out_of_range = Slip(steps=[Step(agent="planner")], next=7)
    assert out_of_range.at_end
    with pytest.raises(InvalidSlip):
        _ = out_of_range.current


def test_check_agents_accepts_known_and_names_the_unknown() -> None:
    trip_slip().check_agents(AGENTS)
    slip = Slip(
        steps=[
            Step(agent="planner"),
            ParallelGroup(parallel=[Step(agent="flights"), Step(agent="cars")]),
            Step(agent="zeppelins"),
        ]
    )
    with pytest.raises(UnknownAgent) as info:
        slip.check_agents(AGENTS)
    assert info.value.reason == "unknown_agent"
    assert "'cars'" in str(info.value)
    assert "'zeppelins'" in str(info.value)
    assert "'flights'" not in str(info.value).split("known agents")[0]


def test_check_loops_passes_for_listed_visits() -> None:
    slip = trip_slip()
    for agent in ("planner", "flights", "hotels"):
        slip = slip.advanced(agent, f"id-{agent}", AT)
    slip.check_loops()


def test_check_loops_detects_a_cycle_and_reports_it() -> None:
    slip = linear(("flights", "book"), ("hotels", "book"), "validator")
    for agent in ("flights", "hotels", "flights"):
        slip = slip.model_copy(update={"visited": [*slip.visited, *_visit(agent)]})
    with pytest.raises(LoopDetected) as info:
        slip.check_loops()
    assert info.value.reason == "loop_detected"
    assert "'flights'" in str(info.value)
    assert "flights -> hotels -> flights" in str(info.value)


def test_check_loops_allows_an_agent_listed_twice_but_not_thrice() -> None:
    slip = linear("flights", "hotels", "flights")
    twice = slip.model_copy(update={"visited": _visit("flights", "hotels", "flights")})
    twice.check_loops()
    thrice = slip.model_copy(update={"visited": _visit("flights", "hotels", "flights", "flights")})
    with pytest.raises(LoopDetected):
        thrice.check_loops()


def test_skipped_visits_do_not_count_as_loops() -> None:
    slip = linear("flights")
    visits = [v.model_copy(update={"skipped": True}) for v in _visit("flights", "flights")]
    slip.model_copy(update={"visited": visits}).check_loops()


def _visit(*agents: str) -> list[Visit]:
    return [Visit(agent=a, id=f"{a}-{i}", at=AT) for i, a in enumerate(agents)]


def test_encode_decode_round_trip_is_compact() -> None:
    slip = trip_slip().advanced("planner", "m-1", AT)
    raw = slip.encode(8192)
    assert b" " not in raw  # compact JSON
    assert Slip.decode(raw) == slip
    assert json.loads(raw)["next"] == 1


def test_encode_over_cap_raises_message_too_large() -> None:
    slip = linear(*["planner"] * 40)
    size = len(slip.model_dump_json(exclude_defaults=True))
    assert slip.encode(size)  # exactly at the cap is fine
    with pytest.raises(MessageTooLarge) as info:
        slip.encode(size - 1)
    assert info.value.reason == "message_too_large"
    assert f"{size} bytes" in str(info.value)
    assert "ITINERANT_MAX_SLIP_BYTES" in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b"{}",
        b'{"steps": []}',
        b'{"steps": [{"agent": "planner"}], "next": -1}',
        b'{"v": 2, "steps": [{"agent": "planner"}]}',
        b'{"steps": [{"agent": "planner", "colour": "red"}]}',
        b'{"steps": [{"parallel": [{"agent": "a"}], "join": "some"}]}',
    ],
)
def test_decode_garbage_raises_invalid_slip(raw: bytes) -> None:
    with pytest.raises(InvalidSlip) as info:
        Slip.decode(raw)
    assert info.value.reason == "invalid_slip"
    assert "ce_routingslip" in str(info.value)


def test_decode_deeply_nested_garbage_raises_invalid_slip() -> None:
    # json.loads raises RecursionError (not ValueError) on deep nesting; that must still be a
    # clean InvalidSlip, not an unexpected exception.
    with pytest.raises(InvalidSlip):
        Slip.decode(b"[" * 100_000)


@pytest.mark.parametrize("join", ["all", "first", "quorum:1", "quorum:2", "quorum:16"])
def test_parallel_group_accepts_valid_joins(join: str) -> None:
    group = ParallelGroup(parallel=[Step(agent="flights"), Step(agent="hotels")], join=join)
    assert group.join == join
    slip = Slip(steps=[Step(agent="planner"), group])
    assert slip.agents() == ["planner", "flights", "hotels"]
    assert Slip.decode(slip.encode(8192)) == slip


@pytest.mark.parametrize("join", ["any", "quorum:0", "quorum:", "quorum:-1", "ALL", "", "all "])
def test_parallel_group_rejects_other_joins(join: str) -> None:
    with pytest.raises(ValidationError, match="join must be"):
        ParallelGroup(parallel=[Step(agent="flights")], join=join)


def test_parallel_group_needs_a_branch_and_positive_timeout() -> None:
    with pytest.raises(ValidationError):
        ParallelGroup(parallel=[])
    with pytest.raises(ValidationError):
        ParallelGroup(parallel=[Step(agent="flights")], timeout_s=0)
