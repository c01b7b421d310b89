"""A corpus of poison, sent at every agent's topic (and at the requests and saga events topics)
of one running system: each message lands in the DLQ with the right reason, unchanged, or ends
in a clear failure (a ``step_failed`` event, a rejected or compensated result); the services keep
running without a restart, and a normal trip published before and after the corpus completes.

The whole corpus is published first and the outcomes collected in one pass (a module fixture);
each parametrized test then checks one (target, kind) pair.

Sagas of crafted agent-topic messages are unknown to the coordinator (it ignores their events),
so their outcome is checked where the agent reports it: the DLQ and the saga events topic. The
saga-level outcome (a result) is checked with real requests on the requests topic.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from itinerant.brokers.connection import quiet_client_config
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, OutMessage
from itinerant.wire.events import CompensateCommand
from itinerant.wire.slip import APPROVAL_VISIT, Slip, Step, Visit
from services.contracts.trip import TripRequest
from services.mesh import AGENTS as MESH_AGENTS

from .conftest import EXAMPLES, Broker, System, start_system
from .failure_helpers import Raw, RawReader, readonly_db

pytestmark = pytest.mark.integration

AGENTS = ("planner", "flights", "hotels", "validator", "notifier", "probe")
ACTION = {
    "planner": "plan",
    "flights": "book",
    "hotels": "book",
    "validator": "run",
    "notifier": "run",
    "probe": "fast",
}
COMPENSABLE = ("flights", "hotels", "probe")  # agents whose ACTION has a compensation
BOOKING_TABLE = {
    "flights": "flight_bookings",
    "hotels": "hotel_bookings",
    "probe": "probe_effects",
}
COLLECT_TIMEOUT_S = 90


def next_agent(agent: str) -> str:
    return "notifier" if agent == "validator" else "validator"


@dataclass
class Expect:
    dlq: str | None = None  # x-dlq-reason of the dead letter; None: no dead letter at all
    event: tuple[str, str] | None = None  # (kind, reason) of the saga event the agent sends
    result: tuple[str, str] | None = None  # (status, reason) on the results topic


@dataclass
class Case:
    target: str  # agent, "requests" or "events"
    kind: str
    saga_id: str
    message_id: str | None
    topic: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]
    expect: Expect
    service: str = field(init=False)

    def __post_init__(self) -> None:
        self.service = self.target if self.target in AGENTS else "coordinator"

    @property
    def id(self) -> str:
        return f"{self.target}:{self.kind}"


# --- building messages ------------------------------------------------------------------------


def future(minutes: int = 10) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


@dataclass
class Builder:
    """Makes the messages of the corpus from a real completed itinerary."""

    settings: Any
    itinerary: dict[str, Any]

    def payload(self, agent: str, **changes: Any) -> bytes:
        if agent == "probe":
            return json.dumps({"request": self.itinerary["request"]}).encode()
        doc = json.loads(json.dumps(self.itinerary))
        for path, value in changes.items():
            where = doc
            *parents, last = path.split(".")
            for name in parents:
                where = where[name]
            if value is _DROP:
                where.pop(last, None)
            else:
                where[last] = value
        return json.dumps(doc).encode()

    def envelope(
        self,
        agent: str,
        *,
        ce_type: str | None = None,
        data: bytes | None = None,
        slip: Slip | object | None = None,
        budget: Budget | object | None = None,
    ) -> Envelope:
        steps = [Step(agent=agent, action=ACTION[agent]), Step(agent=next_agent(agent))]
        return Envelope(
            id=str(uuid.uuid4()),
            type=ce_type or f"itinerant.{agent}.{ACTION[agent]}.v1",
            source="/itinerant/coordinator",  # signed as it (publish_all): past authentication
            saga_id=str(uuid.uuid4()),
            data=self.payload(agent) if data is None else data,
            slip=Slip(steps=steps, visited=required_visits())
            if slip is None
            else (None if slip is _DROP else slip),  # type: ignore[arg-type]
            budget=(Budget(max_hops=10, deadline=future()) if budget is None else budget)  # type: ignore[arg-type]
            if budget is not _DROP
            else None,
        )

    def case(
        self,
        agent: str,
        kind: str,
        expect: Expect,
        env: Envelope,
        *,
        value: bytes | object | None = None,
        headers: Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]] | None = None,
    ) -> Case:
        out = env.to_message(self.settings.agent_topic(agent), max_slip_bytes=10**7)
        built = out.headers if headers is None else headers(list(out.headers))
        return Case(
            target=agent,
            kind=kind,
            saga_id=env.saga_id,
            message_id=env.id,
            topic=out.topic,
            key=env.saga_id.encode(),
            value=out.value if value is None else (None if value is _NULL else value),  # type: ignore[arg-type]
            headers=built,
            expect=expect,
        )


_DROP = object()
_NULL = object()


def without(*names: str) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    return lambda headers: [(k, v) for k, v in headers if k not in names]


def replacing(
    name: str, value: bytes
) -> Callable[[list[tuple[str, bytes]]], list[tuple[str, bytes]]]:
    return lambda headers: [(k, v if k != name else value) for k, v in headers]


def dead(reason: str, *, event: bool = True) -> Expect:
    """Dead-lettered; the agent also reports ``step_deadlettered`` when the saga id is readable."""
    return Expect(dlq=reason, event=("step_deadlettered", reason) if event else None)


def stopped(reason: str) -> Expect:
    """Not poison: the agent stops the saga with ``step_failed`` (no dead letter)."""
    return Expect(event=("step_failed", reason))


def oversized_slip(agent: str, cap: int) -> Slip:
    """A slip just under the cap: accepted on receipt, over it once the agent adds its visit."""
    steps = [Step(agent=agent, action=ACTION[agent]), Step(agent=next_agent(agent))]
    required = required_visits()
    pad = Visit(agent="notifier", id="", at=datetime.now(UTC), skipped=True, step=2)
    base = len(Slip(steps=steps, visited=[*required, pad]).model_dump_json(exclude_defaults=True))
    # Room for the three visits' signatures (added when published, about 96 bytes each).
    reserve = 3 * 110
    pad = pad.model_copy(update={"id": "p" * (cap - 20 - base - reserve)})
    slip = Slip(steps=steps, visited=[*required, pad])
    assert cap - 40 - reserve < len(slip.model_dump_json(exclude_defaults=True)) <= cap - reserve
    return slip


def agent_cases(b: Builder, agent: str) -> list[Case]:
    cap = b.settings.max_slip_bytes
    own = [Step(agent=agent, action=ACTION[agent]), Step(agent=next_agent(agent))]
    e = b.envelope
    now = datetime.now(UTC)
    cases = [
        b.case(
            agent, "undecodable payload", dead("invalid_json"), e(agent, data=b"\xff\xfe\x00\x81")
        ),
        b.case(agent, "empty payload", dead("invalid_json"), e(agent, data=b"")),
        b.case(agent, "null payload (tombstone)", dead("empty_value"), e(agent), value=_NULL),
        b.case(agent, "JSON array", dead("schema_violation"), e(agent, data=b"[1, 2, 3]")),
        b.case(agent, "wrong types", dead("schema_violation"), e(agent, data=b'{"request": 42}')),
        b.case(agent, "JSON null", dead("schema_violation"), e(agent, data=b"null")),
        b.case(agent, "deeply nested JSON", dead("invalid_json"), e(agent, data=b"[" * 100_000)),
        b.case(
            agent,
            "oversized payload",
            dead("message_too_large"),
            e(agent, data=json.dumps({"pad": "x" * 300_000}).encode()),
        ),
        b.case(
            agent,
            "unknown version",
            dead("unsupported_version"),
            e(agent, ce_type=f"itinerant.{agent}.{ACTION[agent]}.v9"),
        ),
        b.case(
            agent,
            "type without version",
            dead("unsupported_version"),
            e(agent, ce_type=f"itinerant.{agent}.{ACTION[agent]}"),
        ),
        b.case(
            agent,
            "unknown action",
            dead("unknown_action"),
            e(agent, ce_type=f"itinerant.{agent}.teleport.v1"),
        ),
        b.case(
            agent,
            "type of another agent",
            dead("unsupported_type"),
            e(agent, ce_type=f"itinerant.{next_agent(agent)}.run.v1"),
        ),
        b.case(
            agent, "no headers", dead("missing_header", event=False), e(agent), headers=lambda _: []
        ),
        b.case(
            agent, "missing ce_type", dead("missing_header"), e(agent), headers=without("ce_type")
        ),
        b.case(
            agent,
            "non-UTF-8 header",
            dead("undecodable"),
            e(agent),
            headers=replacing("ce_type", b"itinerant.\xff\xfe.v1"),
        ),
        b.case(
            agent,
            "unknown agent in slip",
            dead("unknown_agent"),
            e(agent, slip=Slip(steps=[own[0], Step(agent="teleporter")])),
        ),
        b.case(
            agent,
            "slip not JSON",
            dead("invalid_slip"),
            e(agent),
            headers=replacing("ce_routingslip", b"{not a slip"),
        ),
        b.case(
            agent,
            "deeply nested slip",
            dead("oversized_header"),  # refused by its size before it is parsed
            e(agent),
            headers=replacing("ce_routingslip", b"[" * 100_000),
        ),
        b.case(
            agent,
            "deeply nested slip within the cap",
            dead("invalid_slip"),
            e(agent),
            headers=replacing("ce_routingslip", b"[" * (cap - 100)),
        ),
        b.case(
            agent,
            "slip cursor out of range",
            dead("invalid_slip"),
            e(agent, slip=Slip(steps=own, next=5)),
        ),
        b.case(
            agent,
            "slip points at another agent",
            dead("invalid_slip"),
            e(agent, slip=Slip(steps=own, next=1)),
        ),
        b.case(agent, "no slip", dead("missing_slip"), e(agent, slip=_DROP)),
        b.case(
            agent,
            "branch outside a parallel group",
            dead("invalid_slip"),
            e(agent, slip=Slip(steps=own, branch=1)),
        ),
        b.case(
            agent,
            "oversized slip produced",
            dead("message_too_large"),
            e(agent, slip=oversized_slip(agent, cap)),
        ),
        b.case(  # a slip over the cap is refused on receipt (docs/security.md#bounded-inputs)
            agent,
            "huge slip received",
            dead("oversized_header"),
            e(agent, slip=oversized_slip(agent, 60_000)),
        ),
        b.case(
            agent,
            "bad budget header",
            dead("invalid_budget"),
            e(agent),
            headers=replacing("ce_budget", b'{"max_hops": "many"}'),
        ),
        b.case(
            agent,
            "hop budget used up",
            stopped("budget_exceeded:hops"),
            e(agent, budget=Budget(max_hops=3, hops=3, deadline=future())),
        ),
        b.case(
            agent,
            "deadline passed",
            stopped("budget_exceeded:deadline"),
            e(agent, budget=Budget(max_hops=10, deadline=now - timedelta(hours=1))),
        ),
        b.case(
            agent,
            "token budget used up",
            stopped("budget_exceeded:tokens"),
            e(agent, budget=Budget(max_hops=10, deadline=future(), max_tokens=10, tokens=11)),
        ),
        b.case(
            agent,
            "cost budget used up",
            stopped("budget_exceeded:cost"),
            e(
                agent,
                budget=Budget(max_hops=10, deadline=future(), max_cost_usd=0.01, cost_usd=0.02),
            ),
        ),
        b.case(
            agent,
            "loop in visited",
            stopped("loop_detected"),
            e(
                agent,
                slip=Slip(
                    steps=own,
                    visited=[
                        *required_visits(),
                        Visit(agent=agent, id=str(uuid.uuid4()), at=now, step=2),
                        Visit(agent=agent, id=str(uuid.uuid4()), at=now, step=3),
                    ],
                ),
            ),
        ),
    ]
    if agent != "planner" and agent != "probe":
        cases.append(
            b.case(
                agent,
                "trip without a plan",
                dead("schema_violation"),
                e(agent, data=b.payload(agent, plan=_DROP)),
            )
        )
    if agent == "notifier":  # the notifier looks the city up: KeyError, a bug until proven not
        cases.append(
            b.case(
                agent,
                "handler raises",
                dead("handler_error"),
                e(agent, data=b.payload(agent, **{"plan.origin": "ZZZ"})),
            )
        )
    business: dict[str, tuple[str, dict[str, Any]]] = {
        "planner": ("unknown_city", {"request.destination": "ZZZ"}),
        "flights": ("no_route", {"plan.origin": "ZZZ"}),
        "hotels": ("sold_out", {"plan.destination": "KEF"}),
        "validator": ("validation_failed", {"plan.budget_usd": 1}),
    }
    if agent in business:
        reason, changes = business[agent]
        cases.append(
            b.case(
                agent,
                "business failure",
                stopped(reason),
                e(agent, data=b.payload(agent, **changes)),
            )
        )
    if agent == "probe":
        cases.append(
            b.case(
                agent,
                "business failure",
                stopped("probe_failed"),
                e(
                    agent,
                    ce_type="itinerant.probe.fail.v1",
                    slip=Slip(steps=[Step(agent="probe", action="fail")]),
                ),
            )
        )
    if agent in COMPENSABLE:
        cases += compensate_cases(b, agent)
    return cases


def compensate_cases(b: Builder, agent: str) -> list[Case]:
    def command(**changes: Any) -> bytes:
        body = CompensateCommand(
            action=ACTION[agent], step=1, output={"request": 42}, reason="poison test"
        ).model_dump(mode="json")
        body.update(changes)
        return json.dumps(body).encode()

    def env(data: bytes, version: int = 1) -> Envelope:
        return b.envelope(
            agent,
            ce_type=f"itinerant.{agent}.compensate.v{version}",
            data=data,
            slip=_DROP,
            budget=_DROP,
        )

    return [
        b.case(
            agent,
            "compensation with a bad recorded output",
            Expect(dlq="schema_violation", event=("compensation_failed", "schema_violation")),
            env(command()),
        ),
        b.case(  # not an action of this agent: nothing can be undone, the saga must hear it
            agent,
            "compensation of an unknown action",
            Expect(dlq="unknown_action", event=("compensation_failed", "unknown_action")),
            env(command(action="teleport", output={})),
        ),
        b.case(
            agent,
            "compensate command of the wrong shape",
            dead("schema_violation"),
            env(b'{"undo": "everything"}'),
        ),
        b.case(agent, "compensate v2", dead("unsupported_version"), env(command(), version=2)),
    ]


def event_cases(b: Builder) -> list[Case]:
    topic = b.settings.events_topic

    def case(kind: str, reason: str, ce_type: str, value: bytes, headers: bool = True) -> Case:
        env = Envelope(
            id=str(uuid.uuid4()),
            type=ce_type,
            source="/itinerant/coordinator",
            saga_id=str(uuid.uuid4()),
            data=value,
        )
        return Case(
            target="events",
            kind=kind,
            saga_id=env.saga_id,
            message_id=env.id,
            topic=topic,
            key=env.saga_id.encode(),
            value=value,
            headers=env.headers() if headers else [],
            expect=Expect(dlq=reason),
        )

    return [
        case("event not JSON", "schema_violation", "itinerant.saga.step_completed.v1", b"{oops"),
        case(
            "event of the wrong shape",
            "schema_violation",
            "itinerant.saga.step_failed.v1",
            b'{"kind": "step_failed"}',
        ),
        case("not a saga event", "unsupported_type", "itinerant.flights.book.v1", b"{}"),
        case(
            "event without headers", "missing_header", "itinerant.saga.step_failed.v1", b"{}", False
        ),
    ]


def required_visits() -> list[Visit]:
    """The visits a booking requires (validator, approval gate), signed when published, so a
    poison booking reaches the check it is about."""
    now = datetime.now(UTC)
    return [
        Visit(agent=name, id=str(uuid.uuid4()), at=now, step=index)
        for index, name in enumerate(("validator", APPROVAL_VISIT))
    ]


def trip_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((EXAMPLES / "trip.json").read_text())
    body.update(changes)
    return body


def request_cases(b: Builder) -> list[Case]:
    topic = b.settings.requests_topic

    def refused(
        kind: str, reason: str, value: bytes | None, extra: list[tuple[str, bytes]] | None = None
    ) -> Case:
        saga_id = str(uuid.uuid4())
        return Case(
            target="requests",
            kind=kind,
            saga_id=saga_id,
            message_id=None,
            topic=topic,
            key=saga_id.encode(),
            value=value,
            headers=[("ce_sagaid", saga_id.encode()), *(extra or [])],
            expect=Expect(dlq=reason, result=("rejected", reason)),
        )

    def stopping(kind: str, reason: str, **changes: Any) -> Case:
        saga_id = str(uuid.uuid4())
        request = TripRequest.model_validate(trip_body(request_id=saga_id, **changes))
        env = Envelope(
            id=str(uuid.uuid4()),
            type="itinerant.request.v1",
            source="/tests/poison",
            saga_id=saga_id,
            data=request.model_dump_json(exclude_none=True).encode(),
        )
        return Case(
            target="requests",
            kind=kind,
            saga_id=saga_id,
            message_id=env.id,
            topic=topic,
            key=saga_id.encode(),
            value=env.data,
            headers=env.headers(),
            expect=Expect(result=("compensated", reason)),
        )

    good = json.dumps(trip_body()).encode()
    return [
        refused("not JSON", "invalid_json", b"{this is not json"),
        refused("undecodable payload", "invalid_json", b"\xff\xfe\x00\x81"),
        refused("empty payload", "empty_value", b""),
        refused("null payload (tombstone)", "empty_value", None),
        refused("JSON array", "invalid_request", b"[1, 2, 3]"),
        refused("wrong types", "invalid_request", json.dumps(trip_body(traveller=42)).encode()),
        refused(
            "missing fields",
            "invalid_request",
            json.dumps({"traveller": {"name": "X"}, "origin": "MAD"}).encode(),
        ),
        refused("deeply nested JSON", "invalid_json", b"[" * 100_000),
        refused(
            "oversized payload",
            "message_too_large",
            json.dumps(trip_body(text="x" * 300_000)).encode(),
        ),
        refused(
            "unknown version", "unsupported_version", good, [("ce_type", b"itinerant.request.v7")]
        ),
        refused(
            "type without version", "unsupported_version", good, [("ce_type", b"itinerant.request")]
        ),
        refused(
            "type of an agent message",
            "unsupported_version",
            good,
            [("ce_type", b"itinerant.flights.book.v1")],
        ),
        stopping("hop budget used up", "budget_exceeded:hops", max_hops=1),
        stopping("deadline passed", "budget_exceeded:deadline", deadline_s=0.001),
        stopping("business failure: unknown city", "unknown_city", destination="OSX"),
        stopping("business failure: sold out", "sold_out", destination="KEF"),
    ]


# --- the expected (target, kind) pairs, known before the system runs -------------------------


def _static_ids() -> list[str]:
    fake = Builder(
        settings=_FakeSettings(),
        itinerary=json.loads(json.dumps(_FAKE_ITINERARY)),
    )
    return [c.id for c in build_corpus(fake)]


class _FakeSettings:
    max_slip_bytes = 8192
    events_topic = "events"
    requests_topic = "requests"

    def agent_topic(self, agent: str) -> str:
        return agent


_FAKE_ITINERARY: dict[str, Any] = {"request": trip_body(), "plan": {}}


def build_corpus(b: Builder) -> list[Case]:
    cases: list[Case] = []
    for agent in AGENTS:
        cases += agent_cases(b, agent)
    cases += event_cases(b)
    cases += request_cases(b)
    return cases


CASE_IDS = _static_ids()


# --- running it -------------------------------------------------------------------------------


@dataclass
class Outcome:
    cases: dict[str, Case]
    letters: dict[str, list[Raw]]  # saga id -> dead letters
    events: dict[str, list[dict[str, Any]]]  # saga id -> saga events (values)
    results: dict[str, dict[str, Any]]  # saga id -> result
    before: dict[str, Any]
    after: dict[str, Any]
    seconds: float
    settings: Any


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(
        broker, tmp_path_factory.mktemp("poison"), agents=[*(a.name for a in MESH_AGENTS), "probe"]
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def publish_all(system: System, cases: list[Case]) -> None:
    producer = Producer(
        {
            **quiet_client_config(
                system.settings.kafka_bootstrap_servers, system.settings.broker_timeout_s
            ),
            "linger.ms": 5,
            "message.max.bytes": 2_000_000,
        }
    )
    errors: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for case in cases:
        if case.target != "requests":  # the mesh's own topics: signed, to reach the check
            signed = system.sign(OutMessage(case.topic, case.key, case.value or b"", case.headers))
            case.headers = list(signed.headers)
            if case.value is not None:
                case.value = signed.value
        producer.produce(
            case.topic, value=case.value, key=case.key, headers=case.headers, on_delivery=report
        )
        producer.poll(0)
    assert producer.flush(30) == 0 and not errors, errors


def satisfied(case: Case, letters: list[Raw], events: list[dict[str, Any]], result: Any) -> bool:
    want = case.expect
    if want.dlq is not None and not letters:
        return False
    if want.event is not None and not any(e.get("kind") == want.event[0] for e in events):
        return False
    return want.result is None or result is not None


def settled(case: Case, letters: list[Raw], events: list[dict[str, Any]], result: Any) -> bool:
    """The expected outcome, or a different one already seen (the test then says which)."""
    if satisfied(case, letters, events, result):
        return True
    want = case.expect
    wrong_letter = any(x.text("x-dlq-reason") != want.dlq for x in letters)
    wrong_event = any(want.event is None or e.get("kind") != want.event[0] for e in events)
    return wrong_letter or wrong_event


@pytest.fixture(scope="module")
def outcome(system: System) -> Outcome:
    settings = system.settings
    before_id = system.publish("trip.json")
    before = system.results({before_id})[before_id]
    assert before["status"] == "completed", before
    builder = Builder(settings, before["output"])
    cases = build_corpus(builder)
    assert [c.id for c in cases] == CASE_IDS
    started = time.monotonic()
    publish_all(system, cases)
    after_id = system.publish(
        TripRequest.model_validate(trip_body(traveller={"name": "After the poison"}))
    )
    by_saga = {c.saga_id: c for c in cases}
    letters: dict[str, list[Raw]] = {}
    events: dict[str, list[dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    topics = [settings.dlq_topic, settings.events_topic, settings.results_topic]
    with RawReader(settings, topics) as reader:
        seen = 0

        def done(records: list[Raw]) -> bool:
            nonlocal seen
            for record in records[seen:]:
                saga = record.key_text or ""
                if record.topic == settings.dlq_topic:
                    letters.setdefault(saga, []).append(record)
                elif record.topic == settings.events_topic:
                    value = record.json()
                    if isinstance(value, dict) and "saga_id" in value:
                        events.setdefault(value["saga_id"], []).append(value)
                elif record.topic == settings.results_topic:
                    value = record.json()
                    if isinstance(value, dict):
                        results.setdefault(saga, value)
            seen = len(records)
            return after_id in results and all(
                settled(c, letters.get(s, []), events.get(s, []), results.get(s))
                for s, c in by_saga.items()
            )

        try:
            reader.until(done, COLLECT_TIMEOUT_S, f"the outcomes of {len(cases)} poison messages")
        except pytest.fail.Exception:
            missing = [
                c.id
                for s, c in by_saga.items()
                if not settled(c, letters.get(s, []), events.get(s, []), results.get(s))
            ]
            pytest.fail(f"no outcome after {COLLECT_TIMEOUT_S}s for {len(missing)}: {missing}")
    took = time.monotonic() - started
    print(
        f"\npoison corpus: {len(cases)} messages, {len({c.kind for c in cases})} kinds, "
        f"outcomes in {took:.1f}s"
    )
    return Outcome(
        cases={c.id: c for c in cases},
        letters=letters,
        events=events,
        results=results,
        before=before,
        after=results[after_id],
        seconds=took,
        settings=settings,
    )


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_poison_ends_in_the_dlq_or_a_clear_failure(outcome: Outcome, case_id: str) -> None:
    case = outcome.cases[case_id]
    letters = outcome.letters.get(case.saga_id, [])
    events = outcome.events.get(case.saga_id, [])
    want = case.expect
    if want.dlq is None:
        assert letters == [], (
            f"{case_id}: dead-lettered as {[x.text('x-dlq-reason') for x in letters]}"
        )
    else:
        assert len(letters) == 1, (
            f"{case_id}: {len(letters)} dead letters; the agent reported "
            f"{[(e['kind'], e.get('reason')) for e in events]}"
        )
        letter = letters[0]
        assert letter.text("x-dlq-reason") == want.dlq, (case_id, letter.text("x-dlq-error"))
        assert letter.text("x-dlq-service") == case.service
        assert letter.text("x-dlq-origin-topic") == case.topic
        assert letter.text("x-dlq-error"), "the error says what is wrong"
        assert letter.text("x-dlq-attempts") == "1"
        for name in (
            "x-dlq-error-type",
            "x-dlq-origin-partition",
            "x-dlq-origin-offset",
            "x-dlq-at",
        ):
            assert letter.header(name), name
        # The original, unchanged: key, value and every header in order, plus x-dlq-*.
        assert letter.key == case.key
        assert letter.value == (case.value or b"")
        kept = [(k, v) for k, v in letter.headers if not k.startswith("x-dlq-")]
        assert kept == case.headers
    if want.event is not None:
        kind, reason = want.event
        matching = [e for e in events if e["kind"] == kind]
        assert matching, f"{case_id}: no {kind} event, saw {[e['kind'] for e in events]}"
        assert matching[0]["reason"] == reason, matching[0]
        assert matching[0]["agent"] == case.service
        assert matching[0]["error"]
    if want.dlq is not None and want.event is None and case.target in AGENTS:
        assert not events, f"{case_id}: unexpected events {events}"
    if want.result is not None:
        status, reason = want.result
        result = outcome.results[case.saga_id]
        assert (result["status"], result["reason"]) == (status, reason), result
        assert result["error"], "the result says why"
    if case.target in BOOKING_TABLE and case.message_id is not None:
        db = readonly_db(outcome.settings, case.target)
        try:
            rows = db.execute(
                f"SELECT COUNT(*) FROM {BOOKING_TABLE[case.target]} WHERE idempotency_key = ?",
                (case.message_id,),
            ).fetchone()
        finally:
            db.close()
        assert rows == (0,), f"{case_id}: a side effect was kept"


def test_corpus_is_large_and_services_keep_running(system: System, outcome: Outcome) -> None:
    kinds = {c.kind for c in outcome.cases.values()}
    assert len(kinds) >= 25, sorted(kinds)
    targets = {c.target for c in outcome.cases.values()}
    assert targets == {*AGENTS, "requests", "events"}
    assert outcome.before["status"] == "completed"
    assert outcome.after["status"] == "completed", outcome.after  # nothing else was lost
    for name, proc in system.supervisor.procs.items():
        assert proc.alive(), f"{name} died"
        assert proc.restarts == 0, f"{name} was restarted"
