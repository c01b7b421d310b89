"""Handler failures through a real Processor with a tiny test agent
(docs/architecture.md#budgets-and-loops, docs/architecture.md#the-dead-letter-topic)."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from itinerant.errors import BusinessFailure, DependencyUnavailable, LoopDetected
from itinerant.runtime import dlq
from itinerant.runtime.agent import Agent, HandlerContext
from itinerant.runtime.llm import DeterministicProvider
from itinerant.runtime.processor import Processed, Processor
from itinerant.runtime.store import Store
from itinerant.security.keys import ensure_local_keys, keys_dir
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.testing import signed
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, InRecord, OutMessage
from itinerant.wire.events import CompensateCommand, StepEvent, StepEventKind
from itinerant.wire.ids import derived_id
from itinerant.wire.slip import Slip, Step, Visit

NAME = "tester"


class Ask(BaseModel):
    mode: str
    n: int = 0


class Answer(BaseModel):
    mode: str
    n: int


CALLS: list[str] = []
UNDONE: list[int] = []

agent = Agent(NAME, "fails on purpose")


class Flaky(DependencyUnavailable):
    reason = "flaky_dependency"


@agent.handler("run", side_effects=True, timeout_s=0.05)
async def run(ask: Ask, ctx: HandlerContext) -> Answer:
    CALLS.append(ask.mode)
    if ask.mode == "bug":
        raise RuntimeError("kaboom")
    if ask.mode == "flaky":
        raise Flaky("the dependency did not answer")
    if ask.mode == "hang":
        await asyncio.Event().wait()
    if ask.mode == "sold_out":
        raise BusinessFailure("nothing left", reason="sold_out")
    if ask.mode == "wrong_type":
        return ask  # type: ignore[return-value]
    return Answer(mode=ask.mode, n=ask.n + 1)


@agent.compensation("run")
async def undo(answer: Answer, ctx: HandlerContext) -> None:
    if answer.mode == "undo_bug":
        raise ValueError("cannot undo")
    UNDONE.append(answer.n)


#: The keys every test of this module signs with (the services' and the coordinator's).
SIGNING = Settings(data_dir=Path(tempfile.mkdtemp(prefix="itinerant-keys-")), metrics_port_base=0)
ensure_local_keys(keys_dir(SIGNING), ["coordinator", NAME, "other"])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        agents=[NAME, "other"],
        max_attempts=2,
        retry_base_delay_s=0,
        retry_max_delay_s=0,
        metrics_port_base=0,
        keys_dir=keys_dir(SIGNING),
    )


@pytest.fixture
def processor(settings: Settings, tmp_path: Path) -> Iterator[Processor]:
    CALLS.clear()
    UNDONE.clear()
    store = Store(tmp_path / "tester.db", agent.migrations)
    yield Processor(agent, settings, store, DeterministicProvider())
    store.close()


def budget(**changes: object) -> Budget:
    base: dict[str, object] = {
        "max_hops": 10,
        "deadline": datetime.now(UTC) + timedelta(minutes=1),
        "max_tokens": 0,
    }
    return Budget.model_validate({**base, **changes})


def record(
    mode: str,
    *,
    slip: Slip | None = None,
    spend: Budget | None = None,
    offset: int = 11,
    message_id: str = "msg-1",
    replay_count: int = 0,
) -> InRecord:
    env = Envelope(
        id=message_id,
        type=f"itinerant.{NAME}.run.v1",
        source="/itinerant/coordinator",
        saga_id="saga-1",
        data=Ask(mode=mode).model_dump_json().encode(),
        slip=slip or Slip(steps=[Step(agent=NAME), Step(agent="other")]),
        budget=spend or budget(),
        replay_count=replay_count,
    )
    message = signed(SIGNING, env.to_message(f"itinerant.agent.{NAME}"))
    return InRecord(message.topic, 2, offset, message.key, message.value, message.headers)


def only_event(processed: Processed) -> StepEvent:
    events = [m for m in processed.outputs if m.topic == "itinerant.saga.events"]
    assert len(events) == 1
    return StepEvent.model_validate_json(events[0].value)


def dead_letter(processed: Processed) -> OutMessage:
    letters = [m for m in processed.outputs if m.topic == "itinerant.dlq"]
    assert len(letters) == 1
    return letters[0]


async def test_success_forwards_and_reports(processor: Processor) -> None:
    processed = await processor.process(record("fine"))
    assert processed.outcome == "ok"
    assert [m.topic for m in processed.outputs] == [
        "itinerant.saga.events",
        "itinerant.agent.other",
    ]
    event = only_event(processed)
    assert event.kind is StepEventKind.COMPLETED
    assert event.compensable is True
    assert event.output == {"mode": "fine", "n": 1}
    forward = processed.outputs[1]
    assert forward.header("ce_id") == derived_id("msg-1", NAME, "forward").encode()
    assert forward.header("ce_causationid") == b"msg-1"
    env = Envelope.from_record(
        InRecord(forward.topic, 0, 0, forward.key, forward.value, forward.headers)
    )
    assert env.slip is not None and env.slip.next == 1
    assert [v.agent for v in env.slip.visited] == [NAME]
    assert env.budget is not None and env.budget.hops == 1


async def test_handler_bug_is_dead_lettered_once(processor: Processor) -> None:
    rec = record("bug")
    processed = await processor.process(rec)
    assert processed.outcome == "dead_lettered"
    assert CALLS == ["bug"]  # a bug is not retried
    letter = dead_letter(processed)
    assert letter.header(dlq.REASON) == b"handler_error"
    assert letter.header(dlq.ERROR_TYPE) == b"HandlerError"
    assert b"kaboom" in (letter.header(dlq.ERROR) or b"")
    assert letter.header(dlq.ORIGIN_PARTITION) == b"2"
    assert letter.header(dlq.ORIGIN_OFFSET) == b"11"
    assert letter.value == rec.value and letter.headers[: len(rec.headers)] == rec.headers
    event = only_event(processed)
    assert event.kind is StepEventKind.DEADLETTERED
    assert event.reason == "handler_error"
    assert event.step == 0
    # nothing was recorded in the inbox: a replay after the fix runs the handler again
    assert processor.store.recorded_outputs("msg-1") is None


async def test_a_second_copy_of_a_dead_lettered_message_is_not_dead_lettered_again(
    processor: Processor,
) -> None:
    first = await processor.process(record("bug", offset=11))
    # The same message again at a later offset (a producer's retry, an outbox sent again).
    copy = await processor.process(record("bug", offset=12))
    assert copy.outcome == "duplicate"
    # The copy is found out when it fails too (no lookup on the path of every message), so
    # the handler ran again; what it failed to do was never applied.
    assert CALLS == ["bug", "bug"]
    # the letter is sent again as recorded: the same origin, so the same entry for operators
    assert [m.headers for m in copy.outputs] == [m.headers for m in first.outputs]
    assert dead_letter(copy).header(dlq.ORIGIN_OFFSET) == b"11"
    # A replay (one more x-replay-count) is handled anew, and dead-lettered anew.
    replayed = await processor.process(record("bug", offset=13, replay_count=1))
    assert replayed.outcome == "dead_lettered"
    assert CALLS == ["bug", "bug", "bug"]
    assert dead_letter(replayed).header(dlq.ORIGIN_OFFSET) == b"13"


async def test_wrong_return_type_is_a_handler_error(processor: Processor) -> None:
    processed = await processor.process(record("wrong_type"))
    assert dead_letter(processed).header(dlq.REASON) == b"handler_error"
    assert b"returned Ask, not Answer" in (dead_letter(processed).header(dlq.ERROR) or b"")


async def test_retryable_error_is_retried_then_exhausted(processor: Processor) -> None:
    processed = await processor.process(record("flaky"))
    assert CALLS == ["flaky", "flaky"]  # max_attempts=2
    letter = dead_letter(processed)
    assert letter.header(dlq.REASON) == b"retries_exhausted"
    assert letter.header(dlq.ERROR_TYPE) == b"RetriesExhausted"
    error = letter.header(dlq.ERROR) or b""
    assert b"gave up after 2 attempts" in error
    assert b"the dependency did not answer" in error
    assert only_event(processed).reason == "retries_exhausted"


async def test_dead_letter_counts_every_attempt(processor: Processor) -> None:
    processed = await processor.process(record("flaky"))
    assert CALLS == ["flaky", "flaky"]
    assert dead_letter(processed).header(dlq.ATTEMPTS) == b"2"


async def test_handler_timeout_is_retried_then_exhausted(processor: Processor) -> None:
    processed = await processor.process(record("hang"))
    assert CALLS == ["hang", "hang"]
    letter = dead_letter(processed)
    assert letter.header(dlq.REASON) == b"retries_exhausted"
    error = letter.header(dlq.ERROR) or b""
    assert b"did not finish within 0.05s" in error
    assert b"hung past its timeout" in error


async def test_retries_stop_at_the_deadline(
    processor: Processor, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = {"max_attempts": 10, "retry_base_delay_s": 10, "retry_max_delay_s": 60}
    processor.settings = settings.model_copy(update=slow)
    monkeypatch.setattr("itinerant.runtime.processor.random.uniform", lambda low, high: high)
    soon = budget(deadline=datetime.now(UTC) + timedelta(seconds=5))
    processed = await processor.process(record("flaky", spend=soon))
    assert CALLS == ["flaky"]
    error = dead_letter(processed).header(dlq.ERROR) or b""
    assert dead_letter(processed).header(dlq.REASON) == b"retries_exhausted"
    assert b"deadline" in error


async def test_business_failure_is_step_failed_not_a_dead_letter(processor: Processor) -> None:
    processed = await processor.process(record("sold_out"))
    assert processed.outcome == "saga_failed"
    assert [m.topic for m in processed.outputs] == ["itinerant.saga.events"]
    event = only_event(processed)
    assert event.kind is StepEventKind.FAILED
    assert event.reason == "sold_out"
    assert "nothing left" in (event.error or "")
    # recorded: a redelivery re-sends the same step_failed, it does not run the handler again
    again = await processor.process(record("sold_out"))
    assert again.outcome == "duplicate"
    assert [m.header("ce_id") for m in again.outputs] == [
        m.header("ce_id") for m in processed.outputs
    ]
    assert CALLS == ["sold_out"]


async def test_hop_budget_used_up_fails_the_saga(processor: Processor) -> None:
    processed = await processor.process(record("fine", spend=budget(max_hops=3, hops=3)))
    assert CALLS == []  # checked before the handler
    assert processed.outcome == "saga_failed"
    event = only_event(processed)
    assert event.kind is StepEventKind.FAILED
    assert event.reason == "budget_exceeded:hops"
    assert "hop budget of 3" in (event.error or "")


async def test_deadline_passed_fails_the_saga(processor: Processor) -> None:
    past = budget(deadline=datetime.now(UTC) - timedelta(seconds=1))
    processed = await processor.process(record("fine", spend=past))
    assert CALLS == []
    assert only_event(processed).reason == "budget_exceeded:deadline"


async def test_loop_fails_the_saga_with_the_cycle(processor: Processor) -> None:
    at = datetime.now(UTC)
    visited: list[Visit] = []
    for i, name in enumerate([NAME, "other", NAME]):
        visit = Visit(agent=name, id=f"v{i}", at=at, step=i)
        visited.append(mesh_keys(SIGNING).sign_visit("saga-1", visited, visit))
    slip = Slip(steps=[Step(agent=NAME), Step(agent="other")], visited=visited)
    processed = await processor.process(record("fine", slip=slip))
    assert CALLS == []
    event = only_event(processed)
    assert event.kind is StepEventKind.FAILED
    assert event.reason == LoopDetected.reason
    assert f"{NAME} -> other -> {NAME}" in (event.error or "")


async def test_slip_pointing_at_another_agent_is_invalid(processor: Processor) -> None:
    slip = Slip(steps=[Step(agent="other"), Step(agent=NAME)])
    processed = await processor.process(record("fine", slip=slip))
    assert dead_letter(processed).header(dlq.REASON) == b"invalid_slip"
    assert CALLS == []


def compensate_record(output: dict[str, object], *, offset: int = 40) -> InRecord:
    command = CompensateCommand(action="run", step=0, output=output, reason="sold_out")
    env = Envelope(
        id="comp-1",
        type=f"itinerant.{NAME}.compensate.v1",
        source="/itinerant/coordinator",
        saga_id="saga-1",
        data=command.model_dump_json().encode(),
    )
    message = signed(SIGNING, env.to_message(f"itinerant.agent.{NAME}"))
    headers = [*message.headers, ("x-client-header", b"keep me")]
    return InRecord(message.topic, 3, offset, b"original-key", message.value, headers)


async def test_compensation_runs_once_and_reports(processor: Processor) -> None:
    rec = compensate_record({"mode": "fine", "n": 7})
    processed = await processor.process(rec)
    assert processed.outcome == "compensated"
    assert UNDONE == [7]
    event = only_event(processed)
    assert event.kind is StepEventKind.COMPENSATED
    assert (event.step, event.reason) == (0, "sold_out")
    assert (await processor.process(rec)).outcome == "duplicate"
    assert UNDONE == [7]


async def test_failed_compensation_reports_and_dead_letters(processor: Processor) -> None:
    processed = await processor.process(compensate_record({"mode": "undo_bug", "n": 1}))
    event = only_event(processed)
    assert event.kind is StepEventKind.COMPENSATION_FAILED
    assert event.reason == "handler_error"
    assert dead_letter(processed).header(dlq.REASON) == b"handler_error"


async def test_failed_compensation_dead_letters_the_original_record(processor: Processor) -> None:
    # docs/architecture.md#the-dead-letter-topic: the original (same key, value and headers) plus
    # its real origin position.
    rec = compensate_record({"mode": "undo_bug", "n": 1}, offset=40)
    letter = dead_letter(await processor.process(rec))
    assert letter.header(dlq.ORIGIN_PARTITION) == b"3"
    assert letter.header(dlq.ORIGIN_OFFSET) == b"40"
    assert letter.key == b"original-key"
    assert letter.headers[: len(rec.headers)] == rec.headers


async def test_processor_output_is_json_events(processor: Processor) -> None:
    processed = await processor.process(record("fine"))
    for message in processed.outputs:
        json.loads(message.value)
        assert message.key == b"saga-1"
