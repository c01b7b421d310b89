"""The saga state machine (docs/architecture.md#the-saga-coordinator), pure: events in, state and
commands out."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from itinerant.coordinator.saga import (
    Command,
    Compensate,
    Finish,
    Saga,
    SagaState,
    StepStatus,
    begin_compensation,
    on_event,
    on_tick,
    start,
)
from itinerant.wire.events import StepEvent, StepEventKind
from itinerant.wire.slip import Slip, Step, Visit

T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
STEP_TIMEOUT = 60.0
AGENTS = {
    0: ("planner", "plan"),
    1: ("flights", "book"),
    2: ("hotels", "book"),
    3: ("validator", "run"),
}


def new_saga() -> Saga:
    return start(
        "saga-1", {"traveller": {"name": "A"}}, T0, T0 + timedelta(minutes=2), STEP_TIMEOUT
    )


def ev(kind: StepEventKind, step: int, **fields: object) -> StepEvent:
    agent, action = AGENTS.get(step, ("notifier", "run"))
    base: dict[str, object] = {
        "kind": kind,
        "saga_id": "saga-1",
        "agent": agent,
        "action": action,
        "step": step,
        "message_id": f"m-{step}",
        "at": T0,
    }
    return StepEvent.model_validate({**base, **fields})


def done(step: int, *, compensable: bool = False, final: bool = False) -> StepEvent:
    output = {"step": step}
    return ev(StepEventKind.COMPLETED, step, compensable=compensable, final=final, output=output)


def apply(saga: Saga, event: StepEvent, seconds: float = 1.0) -> list[Command]:
    return list(on_event(saga, event, T0 + timedelta(seconds=seconds), STEP_TIMEOUT))


def booked_saga() -> Saga:
    """planner, flights (compensable), hotels (compensable) completed."""
    saga = new_saga()
    assert apply(saga, done(0)) == []
    assert apply(saga, done(1, compensable=True)) == []
    assert apply(saga, done(2, compensable=True)) == []
    return saga


def compensated_indexes(commands: Sequence[Command]) -> list[int]:
    return [c.step.index for c in commands if isinstance(c, Compensate)]


def first(commands: Sequence[Command]) -> Compensate:
    assert isinstance(commands[0], Compensate), commands
    return commands[0]


def test_start_is_running_with_deadlines() -> None:
    saga = new_saga()
    assert saga.state is SagaState.RUNNING
    assert saga.deadline == T0 + timedelta(minutes=2)
    assert saga.step_deadline == T0 + timedelta(seconds=STEP_TIMEOUT)
    assert [e.event for e in saga.timeline] == ["started"]


def test_completed_path() -> None:
    saga = booked_saga()
    later = T0 + timedelta(seconds=3)
    assert on_event(saga, done(3), later, STEP_TIMEOUT) == []
    assert saga.step_deadline == later + timedelta(seconds=STEP_TIMEOUT)
    commands = apply(saga, done(4, final=True), 5)
    assert commands == [Finish()]
    assert saga.state is SagaState.COMPLETED
    assert saga.output == {"step": 4}
    assert saga.step_deadline is None
    assert [s.index for s in saga.steps] == [0, 1, 2, 3, 4]
    assert all(s.status is StepStatus.COMPLETED for s in saga.steps)
    # Outputs are kept only where compensation (or the result) needs them.
    assert saga.step(0).output is None
    assert saga.step(1).output == {"step": 1}


def test_business_failure_compensates_in_reverse_one_at_a_time() -> None:
    saga = booked_saga()
    failed = ev(StepEventKind.FAILED, 3, reason="validation_failed", error="over budget")
    commands = apply(saga, failed)
    assert saga.state is SagaState.COMPENSATING
    assert saga.reason == "validation_failed"
    assert saga.error == "over budget"
    assert compensated_indexes(commands) == [2]  # hotels first, only one in flight
    assert first(commands).reason == "validation_failed"
    assert first(commands).step.output == {"step": 2}
    assert saga.step(2).status is StepStatus.COMPENSATING  # type: ignore[union-attr]
    assert saga.step(1).status is StepStatus.COMPLETED  # type: ignore[union-attr]

    commands = apply(saga, ev(StepEventKind.COMPENSATED, 2))
    assert compensated_indexes(commands) == [1]
    assert saga.state is SagaState.COMPENSATING

    commands = apply(saga, ev(StepEventKind.COMPENSATED, 1))
    assert commands == [Finish()]
    assert saga.state is SagaState.COMPENSATED
    assert saga.reason == "validation_failed"
    statuses = {s.index: s.status for s in saga.steps}
    assert statuses == {
        0: StepStatus.COMPLETED,  # not compensable: left alone
        1: StepStatus.COMPENSATED,
        2: StepStatus.COMPENSATED,
        3: StepStatus.FAILED,
    }


def test_failure_with_nothing_to_undo_finishes_at_once() -> None:
    saga = new_saga()
    apply(saga, done(0))
    commands = apply(saga, ev(StepEventKind.FAILED, 1, reason="sold_out"))
    assert commands == [Finish()]
    assert saga.state is SagaState.COMPENSATED
    assert saga.reason == "sold_out"


def test_deadlettered_parks_then_completion_resumes() -> None:
    saga = new_saga()
    apply(saga, done(0))
    dead = ev(StepEventKind.DEADLETTERED, 1, reason="invalid_json", error="bad bytes")
    assert apply(saga, dead) == []
    assert saga.state is SagaState.PARKED
    assert saga.reason == "invalid_json"
    assert saga.parked_message_id == "m-1"
    assert saga.step_deadline is None
    assert saga.step(1).status is StepStatus.DEADLETTERED  # type: ignore[union-attr]
    # the replayed message succeeds
    assert apply(saga, done(1, compensable=True), 30) == []
    assert saga.state is SagaState.RUNNING
    assert saga.reason is None and saga.parked_message_id is None
    assert saga.step(1).status is StepStatus.COMPLETED
    assert saga.step_deadline == T0 + timedelta(seconds=30 + STEP_TIMEOUT)
    assert "resumed" in [e.event for e in saga.timeline]


def test_parked_saga_is_not_hit_by_the_step_timeout_but_by_its_deadline() -> None:
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, ev(StepEventKind.DEADLETTERED, 1, reason="handler_error"))
    assert on_tick(saga, T0 + timedelta(seconds=STEP_TIMEOUT + 5)) == []
    assert saga.state is SagaState.PARKED
    commands = on_tick(saga, saga.deadline)
    assert commands == [Finish()]
    assert saga.state is SagaState.COMPENSATED
    assert saga.reason == "budget_exceeded:deadline"


def test_compensation_failed_makes_the_saga_failed() -> None:
    saga = booked_saga()
    apply(saga, ev(StepEventKind.FAILED, 3, reason="validation_failed"))
    broken = ev(StepEventKind.COMPENSATION_FAILED, 2, reason="handler_error", error="db down")
    commands = apply(saga, broken)
    assert commands == [Finish()]
    assert saga.state is SagaState.FAILED
    assert saga.step(2).status is StepStatus.COMPENSATION_FAILED  # type: ignore[union-attr]
    assert "db down" in (saga.error or "")
    assert "hotels.book" in (saga.error or "")
    # Later events change nothing.
    assert apply(saga, ev(StepEventKind.COMPENSATED, 1)) == []
    assert saga.state is SagaState.FAILED


def test_duplicate_events_are_ignored() -> None:
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, done(1, compensable=True))
    timeline = len(saga.timeline)
    assert apply(saga, done(1, compensable=True)) == []
    assert apply(saga, done(0)) == []
    assert len(saga.timeline) == timeline
    assert apply(saga, done(2, final=True)) == [Finish()]
    assert apply(saga, done(2, final=True)) == []
    assert saga.state is SagaState.COMPLETED

    other = booked_saga()
    apply(other, ev(StepEventKind.FAILED, 3, reason="x"))
    first = apply(other, ev(StepEventKind.COMPENSATED, 2))
    assert compensated_indexes(first) == [1]
    assert apply(other, ev(StepEventKind.COMPENSATED, 2)) == []  # repeat: no second command
    assert apply(other, ev(StepEventKind.FAILED, 3, reason="x")) == []
    assert other.state is SagaState.COMPENSATING
    assert apply(other, ev(StepEventKind.COMPENSATED, 1)) == [Finish()]
    assert apply(other, ev(StepEventKind.COMPENSATED, 1)) == []


def test_late_completion_after_compensation_started_is_compensated() -> None:
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, done(1, compensable=True))
    assert compensated_indexes(on_tick(saga, saga.deadline)) == [1]
    assert saga.state is SagaState.COMPENSATING
    # The hotels step had already booked; its event crossed with the deadline.
    commands = apply(saga, done(2, compensable=True), 200)
    assert compensated_indexes(commands) == [2]
    assert first(commands).reason == "budget_exceeded:deadline"
    assert saga.step(2).status is StepStatus.COMPENSATING  # type: ignore[union-attr]
    # a late step without side effects needs nothing
    assert apply(saga, done(3), 201) == []


def test_late_completion_after_the_saga_was_compensated_is_compensated() -> None:
    saga = new_saga()
    apply(saga, done(0))
    assert apply(saga, ev(StepEventKind.FAILED, 1, reason="sold_out")) == [Finish()]
    commands = apply(saga, done(2, compensable=True))
    assert compensated_indexes(commands) == [2]
    assert saga.state is SagaState.COMPENSATED


def test_saga_waits_for_a_late_steps_compensation_before_finishing() -> None:
    # Compensating step 1; step 2's completion arrives late and gets its own compensation.
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, done(1, compensable=True))
    assert compensated_indexes(on_tick(saga, saga.deadline)) == [1]
    assert compensated_indexes(apply(saga, done(2, compensable=True))) == [2]
    # Step 1 is undone first; step 2 is still being undone, so the saga is not finished yet.
    commands = apply(saga, ev(StepEventKind.COMPENSATED, 1))
    assert Finish() not in commands
    assert saga.state is SagaState.COMPENSATING
    assert apply(saga, ev(StepEventKind.COMPENSATED, 2)) == [Finish()]
    assert saga.state is SagaState.COMPENSATED


def test_late_steps_compensation_does_not_reissue_the_one_in_flight() -> None:
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, done(1, compensable=True))
    assert compensated_indexes(on_tick(saga, saga.deadline)) == [1]
    assert compensated_indexes(apply(saga, done(2, compensable=True))) == [2]
    # Step 2 is undone first: step 1's compensate is already in flight and must not be re-sent.
    assert compensated_indexes(apply(saga, ev(StepEventKind.COMPENSATED, 2))) == []
    assert apply(saga, ev(StepEventKind.COMPENSATED, 1)) == [Finish()]


def test_on_tick_deadline_compensates_a_running_saga() -> None:
    saga = new_saga()
    apply(saga, done(0), seconds=100)
    apply(saga, done(1, compensable=True), seconds=100)
    apply(saga, done(2, compensable=True), seconds=100)
    assert saga.step_deadline is not None and saga.step_deadline > saga.deadline
    assert on_tick(saga, saga.deadline - timedelta(microseconds=1)) == []
    commands = on_tick(saga, saga.deadline)
    assert compensated_indexes(commands) == [2]
    assert saga.state is SagaState.COMPENSATING
    assert saga.reason == "budget_exceeded:deadline"


def test_on_tick_step_timeout() -> None:
    saga = new_saga()
    apply(saga, done(0), seconds=10)
    apply(saga, done(1, compensable=True), seconds=20)
    assert saga.step_deadline == T0 + timedelta(seconds=20 + STEP_TIMEOUT)
    assert on_tick(saga, T0 + timedelta(seconds=79)) == []
    commands = on_tick(saga, T0 + timedelta(seconds=80))
    assert compensated_indexes(commands) == [1]
    assert saga.reason == "step_timeout"
    assert "[0, 1]" in (saga.error or "")
    # Once compensating, ticks do nothing more.
    assert on_tick(saga, T0 + timedelta(seconds=500)) == []


def test_terminal_sagas_ignore_ticks_and_stops() -> None:
    saga = new_saga()
    apply(saga, done(0, final=True))
    assert saga.state is SagaState.COMPLETED
    assert on_tick(saga, saga.deadline + timedelta(hours=1)) == []
    assert begin_compensation(saga, T0, "discarded") == []
    assert saga.state is SagaState.COMPLETED


def test_discard_of_a_parked_saga_compensates() -> None:
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, done(1, compensable=True))
    apply(saga, ev(StepEventKind.DEADLETTERED, 2, reason="handler_error"))
    commands = begin_compensation(saga, T0, "discarded", "operator discarded the message")
    assert compensated_indexes(commands) == [1]
    assert saga.state is SagaState.COMPENSATING
    assert saga.reason == "discarded"


def _slip_after(visits: Sequence[tuple[int, str]], steps: int = 4) -> Slip:
    """A slip whose steps 0..visits are done: each ``(index, message id)`` visited."""
    route = [Step(agent=AGENTS[i][0], action=AGENTS[i][1]) for i in range(steps)]
    visited = [
        Visit(agent=route[i].agent, id=message_id, at=T0, step=i) for i, message_id in visits
    ]
    return Slip(steps=route, next=len(visits), visited=visited)


def test_a_folded_step_is_recorded_from_the_next_events_slip() -> None:
    saga = new_saga()
    apply(saga, done(0))
    # step 1 sent no event of its own; step 2's carries its visit
    apply(
        saga,
        done(2, compensable=True).model_copy(
            update={"slip": _slip_after([(0, "m-0"), (1, "m-1"), (2, "m-2")])}
        ),
    )
    record = saga.step(1)
    assert record is not None and record.status is StepStatus.COMPLETED
    assert (record.agent, record.action, record.message_id) == ("flights", "book", "m-1")
    assert [r.index for r in saga.steps] == [0, 1, 2]


def test_a_parked_folded_step_resumes_when_a_later_event_shows_its_visit() -> None:
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, ev(StepEventKind.DEADLETTERED, 1, reason="invalid_json", error="bad bytes"))
    assert saga.state is SagaState.PARKED
    # the replayed step 1 succeeds but reports only through step 2's event
    later = done(2, compensable=True).model_copy(
        update={"slip": _slip_after([(0, "m-0"), (1, "m-1"), (2, "m-2")])}
    )
    apply(saga, later, 30)
    assert saga.state is SagaState.RUNNING
    assert saga.step(1).status is StepStatus.COMPLETED  # type: ignore[union-attr]
    assert saga.step(2).status is StepStatus.COMPLETED  # type: ignore[union-attr]
    assert saga.step_deadline == T0 + timedelta(seconds=30 + STEP_TIMEOUT)
    assert "resumed" in [e.event for e in saga.timeline]


def test_another_message_at_a_parked_step_does_not_resume_it() -> None:
    saga = new_saga()
    apply(saga, done(0))
    apply(saga, ev(StepEventKind.DEADLETTERED, 1, reason="invalid_json", error="bad bytes"))
    later = done(2, compensable=True).model_copy(
        update={"slip": _slip_after([(0, "m-0"), (1, "some-other-message"), (2, "m-2")])}
    )
    apply(saga, later, 30)
    assert saga.state is SagaState.PARKED
    assert saga.step(1).status is StepStatus.DEADLETTERED  # type: ignore[union-attr]
