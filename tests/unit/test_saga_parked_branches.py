"""A parked saga stays parked until the dead-lettered message itself is replayed: a sibling branch
of a parallel group that completes later is not a replay and must not resume it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from itinerant.coordinator.saga import Dispatch, Saga, SagaState, on_event, start
from itinerant.wire.events import StepEvent, StepEventKind
from itinerant.wire.slip import ParallelGroup, Slip, Step, Visit

T0 = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
STEP_TIMEOUT = 60.0
GROUP = ParallelGroup(
    parallel=[Step(agent="flights", action="search"), Step(agent="hotels", action="search")]
)
STEPS = [Step(agent="planner", action="plan"), GROUP, Step(agent="notifier")]


def event(kind: StepEventKind, agent: str, action: str, step: int, **fields: object) -> StepEvent:
    base: dict[str, object] = {
        "kind": kind,
        "saga_id": "saga-1",
        "agent": agent,
        "action": action,
        "step": step,
        "message_id": f"m-{agent}-{step}-{fields.get('branch')}",
        "at": T0,
    }
    return StepEvent.model_validate({**base, **fields})


def branch_done(index: int) -> StepEvent:
    agent = GROUP.parallel[index].agent
    slip = Slip(
        steps=STEPS,
        next=1,
        branch=index,
        visited=[Visit(agent=agent, id=f"v-{index}", at=T0)],
    )
    return event(
        StepEventKind.COMPLETED,
        agent,
        "search",
        1,
        branch=index,
        output={agent: "quote"},
        slip=slip,
    )


def state_of(saga: Saga) -> SagaState:
    return saga.state


def test_a_sibling_branch_does_not_resume_a_saga_parked_by_another_branch() -> None:
    saga = start("saga-1", {}, T0, T0 + timedelta(minutes=2), STEP_TIMEOUT)
    at = T0 + timedelta(seconds=1)
    planned = event(
        StepEventKind.COMPLETED,
        "planner",
        "plan",
        0,
        output={},
        slip=Slip(steps=STEPS, next=1),
    )
    assert on_event(saga, planned, at, STEP_TIMEOUT) == []
    dead = event(
        StepEventKind.DEADLETTERED,
        "flights",
        "search",
        1,
        branch=0,
        reason="retries_exhausted",
        error="inventory did not answer",
    )
    on_event(saga, dead, at, STEP_TIMEOUT)
    assert saga.state is SagaState.PARKED

    # The hotels branch was still in flight when flights gave up; it completes now.
    commands = on_event(saga, branch_done(1), at, STEP_TIMEOUT)
    assert commands == []
    assert saga.state is SagaState.PARKED, (
        "a sibling branch's completion resumed the saga, though the dead-lettered flights "
        f"branch was never replayed: {[t.event for t in saga.timeline]}"
    )
    assert saga.reason == "retries_exhausted"

    # The replayed flights branch completes: now the saga resumes and the group joins.
    commands = on_event(saga, branch_done(0), at, STEP_TIMEOUT)
    assert state_of(saga) is SagaState.RUNNING
    assert [type(c) for c in commands] == [Dispatch]
