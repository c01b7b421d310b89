"""Issue 6, the pure and in-process parts: the OpenAI provider against a real local HTTP server,
budgets around an LLM call, the validator's fact checks and re-planning, the approval policy and
the saga's approval states, and both flows through the in-memory mesh."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from itinerant.coordinator.saga import (
    Dispatch,
    SagaState,
    StepStatus,
    on_approval_request,
    on_decision,
    on_tick,
    start,
)
from itinerant.errors import BudgetExceeded, NonRetryableError, ProviderUnavailable
from itinerant.observability import metrics
from itinerant.runtime.agent import HandlerContext
from itinerant.runtime.llm import DeterministicProvider, LLMProvider
from itinerant.runtime.openai_provider import InvalidLLMOutput, OpenAIProvider
from itinerant.settings import Settings
from itinerant.testing import InMemoryMesh
from itinerant.wire.budget import Budget
from itinerant.wire.control import DECISION_TYPE
from itinerant.wire.envelope import Envelope
from itinerant.wire.ids import new_id
from itinerant.wire.slip import Slip, Step, Visit
from services.approval import approval_reasons
from services.contracts.trip import (
    Plan,
    Proposal,
    Refund,
    TripDocument,
    TripRequest,
    Validation,
)
from services.flights.agent import search as flights_search
from services.hotels.agent import search as hotels_search
from services.planner.understanding import PlanDraft
from services.validator.agent import assess, replans_so_far
from tests.fake_openai import FakeOpenAI, Reply, draft, good

NOW = datetime(2027, 1, 1, tzinfo=UTC)
DEPART, BACK = date(2027, 3, 12), date(2027, 3, 15)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


def llm_settings(tmp_path: Path, fake: FakeOpenAI, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        metrics_port_base=0,
        coordinator_http_port=0,
        llm_provider="openai",
        llm_base_url=fake.url,
        llm_timeout_s=0.5,
        **extra,
    )


def counter(metric: Any, *labels: str) -> float:
    return float(metric.labels(*labels)._value.get())


# --- the provider ---------------------------------------------------------------------------


async def test_provider_asks_for_json_schema_and_prices_the_usage(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    settings = llm_settings(
        tmp_path,
        fake,
        llm_models={"planner": "big-model"},
        llm_prices={"big-model": (2.0, 8.0), "default": (1.0, 1.0)},
    )
    provider = OpenAIProvider(settings, "planner")
    fake.script(
        "a", good(draft("MAD", "LIS", DEPART, BACK), prompt_tokens=1000, completion_tokens=500)
    )
    before = counter(metrics.LLM_TOKENS, "planner", "big-model", "input")
    done = await provider.generate(
        "plan_trip", "[case:a] Madrid to Lisbon", PlanDraft, max_tokens=777
    )
    assert done.value.proposal is not None and done.value.proposal.outbound_flight == "IT180"
    assert (done.prompt_tokens, done.completion_tokens, done.model) == (1000, 500, "big-model")
    assert done.cost_usd == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)
    asked = fake.asked("a")[0]
    assert asked["model"] == "big-model" and asked["max_tokens"] == 777
    assert asked["response_format"]["type"] == "json_schema"
    assert asked["response_format"]["json_schema"]["name"] == "PlanDraft"
    assert counter(metrics.LLM_TOKENS, "planner", "big-model", "input") - before == 1000
    # Another agent, no entry in llm_models: the default model and the default price row.
    assert OpenAIProvider(settings, "validator").model == settings.llm_model


async def test_provider_classifies_failures(tmp_path: Path, fake: FakeOpenAI) -> None:
    provider = OpenAIProvider(llm_settings(tmp_path, fake), "planner")
    fake.script(
        "f",
        Reply(content="Sure! Your trip: Lisbon, lovely."),
        Reply(status=429),
        Reply(status=503),
        Reply(status=400),
        Reply(content="{}", delay_s=1.5),
        Reply(content='{"flow": "trip"', finish_reason="length"),
    )
    with pytest.raises(InvalidLLMOutput) as invalid:
        await provider.generate("t", "[case:f]", PlanDraft)
    assert "Sure! Your trip: Lisbon, lovely." in str(invalid.value)  # the raw reply is kept
    with pytest.raises(ProviderUnavailable):
        await provider.generate("t", "[case:f]", PlanDraft)
    with pytest.raises(ProviderUnavailable, match="503"):
        await provider.generate("t", "[case:f]", PlanDraft)
    with pytest.raises(NonRetryableError) as rejected:
        await provider.generate("t", "[case:f]", PlanDraft)
    assert rejected.value.reason == "llm_rejected"
    with pytest.raises(ProviderUnavailable) as slow:
        await provider.generate("t", "[case:f]", PlanDraft)
    assert slow.value.reason == "llm_timeout"
    with pytest.raises(BudgetExceeded) as cut:
        await provider.generate("t", "[case:f]", PlanDraft, max_tokens=50)
    assert cut.value.reason == "budget_exceeded:tokens"


# --- budgets around a call ------------------------------------------------------------------


def context(settings: Settings, provider: LLMProvider, **budget: Any) -> HandlerContext:
    limits: dict[str, Any] = {"max_hops": 10, "deadline": datetime.now(UTC) + timedelta(60)}
    return HandlerContext(
        service="planner",
        saga_id="s",
        message_id=new_id(),
        db=None,  # type: ignore[arg-type]
        provider=provider,
        budget=Budget(**{**limits, **budget}),
        slip=Slip(steps=[Step(agent="planner", action="plan")]),
        log=logging.LoggerAdapter(logging.getLogger("t")),
        settings=settings,
    )


async def test_generate_sets_max_tokens_from_what_is_left_and_adds_the_spend(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    settings = llm_settings(tmp_path, fake)
    ctx = context(
        settings, OpenAIProvider(settings, "planner"), max_tokens=1000, tokens=300, max_cost_usd=1.0
    )
    fake.script(
        "b", good(draft("MAD", "LIS", DEPART, BACK), prompt_tokens=200, completion_tokens=100)
    )
    await ctx.generate("plan_trip", "[case:b]", PlanDraft)
    assert fake.asked("b")[0]["max_tokens"] == 700
    assert ctx.tokens == 300 and ctx.cost_usd > 0


async def test_a_call_that_blows_the_budget_stops_at_that_step(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    settings = llm_settings(tmp_path, fake, llm_prices={"default": (1000.0, 1000.0)})
    provider = OpenAIProvider(settings, "planner")
    fake.script(
        "c", good(draft("MAD", "LIS", DEPART, BACK), prompt_tokens=900, completion_tokens=300)
    )
    before = counter(metrics.BUDGET_EXCEEDED, "planner", "tokens")
    with pytest.raises(BudgetExceeded) as over:
        await context(settings, provider, max_tokens=1000, max_cost_usd=100.0).generate(
            "plan_trip", "[case:c]", PlanDraft
        )
    assert over.value.reason == "budget_exceeded:tokens"
    assert counter(metrics.BUDGET_EXCEEDED, "planner", "tokens") - before == 1
    fake.script(
        "d", good(draft("MAD", "LIS", DEPART, BACK), prompt_tokens=10, completion_tokens=10)
    )
    with pytest.raises(BudgetExceeded) as costly:
        await context(settings, provider, max_tokens=1000, max_cost_usd=0.01).generate(
            "plan_trip", "[case:d]", PlanDraft
        )
    assert costly.value.reason == "budget_exceeded:cost"
    # Nothing left: no call at all.
    with pytest.raises(BudgetExceeded):
        await context(settings, provider, max_tokens=100, tokens=100, max_cost_usd=1.0).generate(
            "plan_trip", "[case:none]", PlanDraft
        )
    assert fake.asked("none") == []


async def test_deterministic_provider_is_not_metered(settings: Settings) -> None:
    provider = DeterministicProvider()
    provider.register("plan_trip", lambda text: PlanDraft(flow="unsupported", note=text))
    ctx = context(settings, provider, max_tokens=0, max_cost_usd=0.0)
    done = await ctx.generate("plan_trip", "hello\n--- feedback ---\nignored", PlanDraft)
    assert done.value.note == "hello" and ctx.tokens == 0


async def test_invalid_output_does_not_open_the_circuit(tmp_path: Path, fake: FakeOpenAI) -> None:
    settings = llm_settings(tmp_path, fake, circuit_threshold=2)
    provider = OpenAIProvider(settings, "cb-test")
    fake.script("e", then=Reply(content="not json"))
    ctx = context(settings, provider, max_tokens=10_000, max_cost_usd=1.0)
    ctx.service = "cb-test"
    for _ in range(3):
        with pytest.raises(InvalidLLMOutput):
            await ctx.generate("plan_trip", "[case:e]", PlanDraft)
    assert len(fake.asked("e")) == 3  # every try reached the server: the circuit stayed closed


# --- the validator --------------------------------------------------------------------------


async def quoted(proposal: Proposal | None, travellers: int = 1) -> TripDocument:
    plan = Plan(
        flow="trip",
        origin="MAD",
        destination="LIS",
        depart_date=DEPART,
        return_date=BACK,
        travellers=travellers,
        planned_by="openai:test",
        proposal=proposal,
    )
    trip = TripDocument(
        request=TripRequest.model_validate({"traveller": {"name": "T"}, "text": "x"}), plan=plan
    )
    ctx: Any = type("Ctx", (), {"db": _NoSeats(), "idempotency_key": "k", "settings": Settings()})()
    ctx.guard = lambda _dep: _Null()
    with_flights = await flights_search(trip, ctx)
    with_hotel = await hotels_search(trip, ctx)
    return with_flights.model_copy(update={"hotel_quote": with_hotel.hotel_quote})


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        return None


class _NoSeats:
    def execute(self, *_: object) -> Any:
        return type("Cursor", (), {"fetchone": lambda self: (0,)})()


def proposal(**overrides: Any) -> Proposal:
    return Proposal.model_validate(draft("MAD", "LIS", DEPART, BACK, **overrides)["proposal"])


async def test_true_facts_pass_and_hallucinations_are_caught() -> None:
    ok = assess(await quoted(proposal()))
    assert ok.issues == [] and ok.facts == [] and ok.warnings == []
    assert any("proposed facts match" in c for c in ok.checks)
    wrong = assess(await quoted(proposal(outbound_flight="IT999", return_flight="IT180")))
    assert wrong.facts == [
        "outbound flight IT999 does not exist",
        "return flight IT180 flies MAD-LIS, not LIS-MAD",
    ]
    sums = assess(await quoted(proposal(total_usd=999.0)))
    assert "the total price is $618.00, not $999.00" in sums.facts
    assert "the proposed total $999.00 is not the sum of its parts $618.00" in sums.facts
    price = assess(await quoted(proposal(flights_usd=300.0, total_usd=510.0)))
    assert "the flights price is $408.00, not $300.00" in price.facts
    elsewhere = assess(await quoted(proposal(hotel_id="H-AMS-1")))
    assert elsewhere.facts == ["hotel H-AMS-1 is in AMS, not LIS"]
    other = assess(await quoted(proposal(hotel_id="H-LIS-1")))
    assert other.facts == [] and "H-LIS-1" in other.warnings[0]


def test_replans_are_counted_from_the_slip() -> None:
    def visit(agent: str) -> Visit:
        return Visit(agent=agent, id=new_id(), at=NOW)

    slip = Slip(steps=[Step(agent="planner")], visited=[visit("planner"), visit("flights")])
    assert replans_so_far(slip) == 0
    again = slip.model_copy(update={"visited": [*slip.visited, visit("planner"), visit("planner")]})
    assert replans_so_far(again) == 2


# --- the approval policy and the saga's approval states ---------------------------------------


async def test_policy_amount_refund_and_warnings() -> None:
    trip = await quoted(proposal())
    assert approval_reasons(trip.model_dump(mode="json"), 1000.0) == ([], 618.0)
    reasons, amount = approval_reasons(trip.model_dump(mode="json"), 500.0)
    assert amount == 618.0 and "over the approval threshold $500.00" in reasons[0]
    warned = trip.model_copy(update={"validation": Validation(ok=True, warnings=["look at me"])})
    assert approval_reasons(warned.model_dump(mode="json"), 1000.0)[0] == [
        "validator warning: look at me"
    ]
    refund = trip.model_copy(
        update={"refund": Refund(booking_ref="FB-1", amount_usd=1200.0, status="quoted")}
    )
    reasons, amount = approval_reasons(refund.model_dump(mode="json"), 1000.0)
    assert amount == 1200.0 and "refund of booking FB-1" in reasons[0]


def gate_slip() -> Slip:
    return Slip(
        steps=[
            Step(agent="flights", action="quote_refund"),
            Step(agent="approval", action="gate"),
            Step(agent="flights", action="refund"),
        ],
        next=1,
        visited=[Visit(agent="flights", id="m0", at=NOW)],
    )


def hold(saga: Any, reasons: list[str]) -> list[Any]:
    return on_approval_request(
        saga,
        step=1,
        message_id="gate-1",
        slip=gate_slip(),
        budget=Budget(max_hops=10, deadline=NOW + timedelta(hours=1), hops=2),
        payload={"x": 1},
        reasons=reasons,
        amount_usd=1200.0,
        now=NOW,
        approval_timeout=600,
        step_timeout=60,
    )


def test_gate_opens_at_once_when_no_policy_applies() -> None:
    saga = start("s", {}, NOW, NOW + timedelta(hours=1), 60)
    [dispatch] = hold(saga, [])
    assert isinstance(dispatch, Dispatch) and saga.state is SagaState.RUNNING
    assert dispatch.slip.next == 2 and dispatch.slip.visited[-1].skipped
    assert dispatch.budget.hops == 3 and dispatch.output == {"x": 1}
    assert hold(saga, []) == []  # a repeat of the gate message


def test_approve_releases_the_held_step_with_who_and_why() -> None:
    saga = start("s", {}, NOW, NOW + timedelta(hours=1), 60)
    assert hold(saga, ["refund too big"]) == []
    assert saga.state is SagaState.AWAITING_APPROVAL and saga.error == "refund too big"
    assert saga.step_deadline == NOW + timedelta(seconds=600)
    [dispatch] = on_decision(
        saga, approve=True, by="ops", why="checked", message_id="d1", now=NOW, step_timeout=60
    )
    assert isinstance(dispatch, Dispatch) and dispatch.slip.visited[-1].skipped is False
    assert saga.state is SagaState.RUNNING and saga.approval and saga.approval.by == "ops"
    assert ("approved", "by ops: checked") in [(t.event, t.detail) for t in saga.timeline]
    # A second decision changes nothing.
    assert (
        on_decision(
            saga, approve=False, by="x", why="late", message_id="d2", now=NOW, step_timeout=60
        )
        == []
    )


def test_reject_and_timeout_compensate() -> None:
    saga = start("s", {}, NOW, NOW + timedelta(hours=1), 60)
    hold(saga, ["big"])
    on_decision(saga, approve=False, by="ops", why="no", message_id="d", now=NOW, step_timeout=60)
    assert saga.state is SagaState.COMPENSATED and saga.reason == "approval_rejected"
    late = start("t", {}, NOW, NOW + timedelta(hours=1), 60)
    hold(late, ["big"])
    assert on_tick(late, NOW + timedelta(seconds=599)) == []
    on_tick(late, NOW + timedelta(seconds=601))
    assert late.state is SagaState.COMPENSATED and late.reason == "approval_timeout"
    gate = late.step(1)
    assert gate is not None and gate.status is StepStatus.FAILED


# --- through the in-memory mesh -------------------------------------------------------------


def decision(mesh: InMemoryMesh, saga_id: str, verdict: str) -> None:
    body = {"saga_id": saga_id, "decision": verdict, "by": "tester", "why": f"{verdict} it"}
    mesh.publish(
        mesh.signed(
            Envelope(
                id=new_id(),
                type=f"{DECISION_TYPE}.v1",
                source="/clients/operator",
                saga_id=saga_id,
                data=json.dumps(body).encode(),
            ).to_message(mesh.settings.events_topic)
        )
    )


async def test_mesh_hallucination_is_replanned_with_the_findings(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    mesh = InMemoryMesh(llm_settings(tmp_path, fake))
    fake.script(
        "h",
        good(draft("MAD", "LIS", DEPART, BACK, outbound_flight="IT999")),
        good(draft("MAD", "LIS", DEPART, BACK)),
    )
    saga_id = mesh.publish_request(
        {"traveller": {"name": "H"}, "text": "[case:h] Madrid to Lisbon 2027-03-12 to 2027-03-15"}
    )
    await mesh.run()
    result = mesh.results()[saga_id]
    assert result["status"] == "completed", result
    assert result["output"]["replan"] == {
        "attempt": 1,
        "issues": ["outbound flight IT999 does not exist"],
    }
    second = fake.asked("h")[1]["messages"][1]["content"]
    assert "outbound flight IT999 does not exist" in second
    assert [s["agent"] for s in result["steps"]].count("planner") == 2
    assert result["budget"]["tokens"] == 2 * (120 + 60)
    rows = (
        mesh.stores["flights"]
        .connection.execute("SELECT status FROM flight_bookings WHERE saga_id = ?", (saga_id,))
        .fetchall()
    )
    assert [tuple(r) for r in rows] == [("held",), ("held",)]


async def test_mesh_refund_waits_for_approval(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ITINERANT_APPROVAL_THRESHOLD_USD", "1000")
    mesh = InMemoryMesh(settings)
    trip = {
        "traveller": {"name": "R"},
        "origin": "BCN",
        "destination": "AMS",
        "depart_date": "2027-05-01",
        "return_date": "2027-05-03",
        "travellers": 3,
    }
    trip_id = mesh.publish_request(trip, principal="rosa")
    await mesh.run()
    assert trip_id not in mesh.results()
    saga = mesh.saga(trip_id)
    assert saga is not None and saga.state is SagaState.AWAITING_APPROVAL
    assert (
        mesh.stores["flights"].connection.execute("SELECT * FROM flight_bookings").fetchall() == []
    )
    decision(mesh, trip_id, "approve")
    await mesh.run()
    result = mesh.results()[trip_id]
    assert result["status"] == "completed", result
    ref = result["output"]["flight"]["booking_id"]

    refund = {"traveller": {"name": "R"}, "kind": "refund", "booking_ref": ref}
    rejected = mesh.publish_request(refund, principal="rosa")
    await mesh.run()
    held = mesh.saga(rejected)
    assert held is not None and held.state is SagaState.AWAITING_APPROVAL
    assert held.approval is not None and held.approval.amount_usd == 1098.0
    decision(mesh, rejected, "reject")
    await mesh.run()
    assert mesh.results()[rejected]["reason"] == "approval_rejected"
    status = (
        mesh.stores["flights"]
        .connection.execute(
            "SELECT DISTINCT status FROM flight_bookings WHERE booking_id = ?", (ref,)
        )
        .fetchall()
    )
    assert [tuple(r) for r in status] == [("held",)]

    approved = mesh.publish_request(refund, principal="rosa")
    await mesh.run()
    decision(mesh, approved, "approve")
    await mesh.run()
    result = mesh.results()[approved]
    assert result["status"] == "completed" and result["output"]["refund"]["status"] == "refunded"
    status = (
        mesh.stores["flights"]
        .connection.execute(
            "SELECT DISTINCT status FROM flight_bookings WHERE booking_id = ?", (ref,)
        )
        .fetchall()
    )
    assert [tuple(r) for r in status] == [("refunded",)]
