"""Issue 6 on a real broker: every service a real process, the planner calling a real local HTTP
server that speaks the OpenAI Chat Completions API (scripted per scenario), budgets, re-planning,
the DLQ for bad replies, and human approval through the CLI."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from itinerant.security.tokens import operator_headers
from services.contracts.trip import TripRequest
from tests.fake_openai import FakeOpenAI, Reply, draft, good

from .conftest import Broker, System, poll_until, start_system

pytestmark = pytest.mark.integration

DEPART, BACK = date(2027, 3, 12), date(2027, 3, 15)
ASK = "Madrid to Lisbon, 2027-03-12 to 2027-03-15, 1 traveller"
MAX_TOKENS = 5000
THRESHOLD = 1000.0


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    yield server
    server.close()


@pytest.fixture(scope="module")
def llm_system(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpenAI
) -> Iterator[System]:
    running = start_system(
        broker,
        tmp_path_factory.mktemp("llm"),
        llm_provider="openai",
        llm_base_url=fake.url,
        llm_timeout_s=1.0,
        default_max_tokens=MAX_TOKENS,
        approval_threshold_usd=THRESHOLD,
        retry_base_delay_s=0.05,
        retry_max_delay_s=0.2,
        circuit_threshold=20,  # scenarios share the planner's breaker; 500s must not open it
        approvers=["operator", "alice", "bob"],
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def ask(system: System, case: str, **extra: Any) -> str:
    request = TripRequest.model_validate(
        {"traveller": {"name": f"LLM {case}"}, "text": f"[case:{case}] {ASK}", **extra}
    )
    return system.publish(request.model_copy(update={"request_id": str(uuid.uuid4())}))


def bookings(system: System, saga_id: str) -> list[tuple[str, str]]:
    rows = (
        system.db("flights")
        .execute("SELECT leg, status FROM flight_bookings WHERE saga_id = ?", (saga_id,))
        .fetchall()
    )
    return sorted((str(r[0]), str(r[1])) for r in rows)


def metric(system: System, service: str, name: str, **labels: str) -> float:
    port = system.settings.metrics_port(service)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def saga(system: System, saga_id: str) -> dict[str, Any] | None:
    url = f"http://127.0.0.1:{system.settings.coordinator_http_port}/sagas/{saga_id}"
    request = urllib.request.Request(url, headers=operator_headers(system.settings))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            loaded: dict[str, Any] = json.loads(response.read())
            return loaded
    except urllib.error.HTTPError:
        return None


def in_state(system: System, saga_id: str, state: str) -> dict[str, Any]:
    found: dict[str, Any] = poll_until(
        lambda: (s := saga(system, saga_id)) is not None and s["state"] == state and s,
        60,
        f"saga {saga_id} {state}",
    )
    return found


def cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**system.settings.to_env(), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    return subprocess.run(
        [".venv/bin/itinerant", *args], capture_output=True, text=True, timeout=60, env=env
    )


# --- the LLM planner ------------------------------------------------------------------------


def test_good_plan_is_validated_booked_and_its_tokens_counted(
    llm_system: System, fake: FakeOpenAI
) -> None:
    fake.script("good", good(draft("MAD", "LIS", DEPART, BACK)))
    before = metric(llm_system, "planner", "itinerant_llm_tokens_total", kind="input")
    saga_id = ask(llm_system, "good")
    result = llm_system.results({saga_id})[saga_id]
    assert result["status"] == "completed", result
    assert result["output"]["plan"]["planned_by"] == "openai:gpt-4o-mini"
    assert result["output"]["validation"]["ok"] is True
    # Token and cost accounting: 120 prompt + 60 completion at gpt-4o-mini's price.
    assert result["budget"]["tokens"] == 180
    assert result["budget"]["cost_usd"] == pytest.approx((120 * 0.15 + 60 * 0.60) / 1e6)
    asked = fake.asked("good")
    assert len(asked) == 1 and asked[0]["max_tokens"] == MAX_TOKENS
    assert asked[0]["response_format"]["type"] == "json_schema"
    after = metric(llm_system, "planner", "itinerant_llm_tokens_total", kind="input")
    assert after - before == 120
    assert metric(llm_system, "planner", "itinerant_llm_cost_usd_total") > 0
    assert bookings(llm_system, saga_id) == [("back", "held"), ("out", "held")]


def test_hallucinated_flight_is_replanned_with_the_findings(
    llm_system: System, fake: FakeOpenAI
) -> None:
    fake.script(
        "hallucination",
        good(draft("MAD", "LIS", DEPART, BACK, outbound_flight="IT999")),
        good(draft("MAD", "LIS", DEPART, BACK)),
    )
    saga_id = ask(llm_system, "hallucination")
    result = llm_system.results({saga_id})[saga_id]
    assert result["status"] == "completed", result
    assert result["output"]["replan"]["issues"] == ["outbound flight IT999 does not exist"]
    asked = fake.asked("hallucination")
    assert len(asked) == 2
    assert "IT999 does not exist" in asked[1]["messages"][1]["content"]
    agents = [(s["agent"], s["action"]) for s in result["steps"]]
    assert agents.count(("planner", "plan")) == 2 and agents.count(("validator", "run")) == 2
    assert result["budget"]["tokens"] == 360  # both calls count
    # Validation before booking: the rejected plan booked nothing; the good one booked once.
    assert bookings(llm_system, saga_id) == [("back", "held"), ("out", "held")]


def test_prices_that_do_not_add_up_fail_after_the_replans(
    llm_system: System, fake: FakeOpenAI
) -> None:
    fake.script("sums", then=good(draft("MAD", "LIS", DEPART, BACK, total_usd=500.0)))
    saga_id = ask(llm_system, "sums")
    result = llm_system.results({saga_id})[saga_id]
    assert result["status"] == "compensated", result
    assert result["reason"] == "validation_failed"
    assert "is not the sum of its parts" in result["error"]
    assert "after 2 re-plan(s)" in result["error"]
    assert len(fake.asked("sums")) == 3  # the plan and max_replans=2 re-plans
    assert bookings(llm_system, saga_id) == []


def test_reply_that_is_not_json_is_retried_then_dead_lettered_with_the_raw_reply(
    llm_system: System, fake: FakeOpenAI
) -> None:
    fake.script("prose", then=Reply(content="Certainly! Lisbon is lovely in March."))
    saga_id = ask(llm_system, "prose")
    [letter] = llm_system.dead_letters(lambda s: s.key == saga_id)
    assert letter.headers["x-dlq-reason"] == "retries_exhausted"
    assert letter.headers["x-dlq-attempts"] == str(llm_system.settings.max_attempts)
    assert "Certainly! Lisbon is lovely in March." in letter.headers["x-dlq-error"]
    assert len(fake.asked("prose")) == llm_system.settings.max_attempts
    in_state(llm_system, saga_id, "parked")
    assert bookings(llm_system, saga_id) == []


def test_429_then_success(llm_system: System, fake: FakeOpenAI) -> None:
    before = metric(llm_system, "planner", "itinerant_retries_total", reason="llm_unavailable")
    fake.script("busy", Reply(status=429), good(draft("MAD", "LIS", DEPART, BACK)))
    saga_id = ask(llm_system, "busy")
    result = llm_system.results({saga_id})[saga_id]
    assert result["status"] == "completed", result
    assert len(fake.asked("busy")) == 2
    after = metric(llm_system, "planner", "itinerant_retries_total", reason="llm_unavailable")
    assert after - before == 1


def test_500_until_retries_are_exhausted(llm_system: System, fake: FakeOpenAI) -> None:
    fake.script("down", then=Reply(status=500))
    saga_id = ask(llm_system, "down")
    [letter] = llm_system.dead_letters(lambda s: s.key == saga_id)
    assert letter.headers["x-dlq-reason"] == "retries_exhausted"
    assert "LLM server error 500" in letter.headers["x-dlq-error"]
    assert len(fake.asked("down")) == llm_system.settings.max_attempts
    in_state(llm_system, saga_id, "parked")
    assert bookings(llm_system, saga_id) == []


def test_slow_reply_past_the_timeout_is_retried(llm_system: System, fake: FakeOpenAI) -> None:
    before = metric(llm_system, "planner", "itinerant_retries_total", reason="llm_timeout")
    fake.script(
        "slow",
        Reply(content=json.dumps(draft("MAD", "LIS", DEPART, BACK)), delay_s=2.5),
        good(draft("MAD", "LIS", DEPART, BACK)),
    )
    saga_id = ask(llm_system, "slow")
    result = llm_system.results({saga_id})[saga_id]
    assert result["status"] == "completed", result
    assert metric(llm_system, "planner", "itinerant_retries_total", reason="llm_timeout") > before


def test_usage_over_the_token_budget_fails_the_saga_at_that_step(
    llm_system: System, fake: FakeOpenAI
) -> None:
    before = metric(llm_system, "planner", "itinerant_budget_exceeded_total", kind="tokens")
    fake.script(
        "greedy",
        good(draft("MAD", "LIS", DEPART, BACK), prompt_tokens=400, completion_tokens=300),
    )
    saga_id = ask(llm_system, "greedy", max_tokens=500)
    result = llm_system.results({saga_id})[saga_id]
    assert result["status"] == "compensated", result
    assert result["reason"] == "budget_exceeded:tokens"
    assert "700 tokens, over its 500" in result["error"]
    assert fake.asked("greedy")[0]["max_tokens"] == 500  # the request's own budget was asked for
    after = metric(llm_system, "planner", "itinerant_budget_exceeded_total", kind="tokens")
    assert after - before == 1
    assert bookings(llm_system, saga_id) == []


def test_cost_over_the_budget(llm_system: System, fake: FakeOpenAI) -> None:
    fake.script(
        "pricey", good(draft("MAD", "LIS", DEPART, BACK), prompt_tokens=4000, completion_tokens=900)
    )
    saga_id = ask(llm_system, "pricey", max_cost_usd=0.0001)
    result = llm_system.results({saga_id})[saga_id]
    assert (result["status"], result["reason"]) == ("compensated", "budget_exceeded:cost")
    assert bookings(llm_system, saga_id) == []


# --- human approval -------------------------------------------------------------------------


def big_trip(system: System) -> str:
    """BCN-AMS for 3: flights $1,098 + hotel $316, over the $1,000 threshold."""
    return system.publish(
        TripRequest.model_validate(
            {
                "request_id": str(uuid.uuid4()),
                "traveller": {"name": "Big Spender"},
                "origin": "BCN",
                "destination": "AMS",
                "depart_date": "2027-05-01",
                "return_date": "2027-05-03",
                "travellers": 3,
            }
        ),
        principal=CUSTOMER,
    )


#: The customer identity big trips and their refunds are made as (a booking is its customer's).
CUSTOMER = "big-spender"


def approved_booking(system: System) -> str:
    trip_id = big_trip(system)
    held = in_state(system, trip_id, "awaiting_approval")
    assert held["approval"]["amount_usd"] == 1414.0
    assert held["approval"]["slip"]["steps"][held["approval"]["step"] + 1]["agent"] == "flights"
    assert bookings(system, trip_id) == []  # nothing booked while it waits
    run = cli(system, "approvals", "approve", trip_id, "--why", "trip ok", "--as", "alice")
    assert run.returncode == 0, run.stderr
    result = system.results({trip_id})[trip_id]
    assert result["status"] == "completed", result
    return str(result["output"]["flight"]["booking_id"])


def refund(system: System, ref: str) -> str:
    return system.publish(
        TripRequest.model_validate(
            {
                "request_id": str(uuid.uuid4()),
                "traveller": {"name": "Big Spender"},
                "kind": "refund",
                "booking_ref": ref,
            }
        ),
        principal=CUSTOMER,
    )


def test_high_value_refund_waits_for_approval_then_is_refunded(llm_system: System) -> None:
    ref = approved_booking(llm_system)
    refund_id = refund(llm_system, ref)
    held = in_state(llm_system, refund_id, "awaiting_approval")
    assert "refund of booking" in held["error"] and held["approval"]["amount_usd"] == 1098.0
    listed = cli(llm_system, "approvals", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert refund_id in {row["saga_id"] for row in json.loads(listed.stdout)}
    shown = cli(llm_system, "approvals", "show", refund_id, "--json")
    assert json.loads(shown.stdout)["next_step"] == "flights.refund"
    statuses = llm_system.db("flights").execute(
        "SELECT DISTINCT status FROM flight_bookings WHERE booking_id = ?", (ref,)
    )
    assert [r[0] for r in statuses] == ["held"]
    run = cli(llm_system, "approvals", "approve", refund_id, "--why", "customer is right")
    assert run.returncode == 0, run.stderr
    result = llm_system.results({refund_id})[refund_id]
    assert result["status"] == "completed", result
    assert result["output"]["refund"] == {
        "booking_ref": ref,
        "amount_usd": 1098.0,
        "status": "refunded",
        "operator": None,  # the customer's own refund, not an operator's
    }
    statuses = llm_system.db("flights").execute(
        "SELECT DISTINCT status FROM flight_bookings WHERE booking_id = ?", (ref,)
    )
    assert [r[0] for r in statuses] == ["refunded"]
    timeline = in_state(llm_system, refund_id, "completed")["timeline"]
    assert any(t["event"] == "approved" and "customer is right" in t["detail"] for t in timeline)
    assert metric(llm_system, "coordinator", "itinerant_approvals_total", outcome="approved") >= 2


def test_rejected_refund_refunds_nothing(llm_system: System) -> None:
    ref = approved_booking(llm_system)
    refund_id = refund(llm_system, ref)
    in_state(llm_system, refund_id, "awaiting_approval")
    run = cli(
        llm_system, "approvals", "reject", refund_id, "--why", "fraud suspected", "--as", "bob"
    )
    assert run.returncode == 0, run.stderr
    result = llm_system.results({refund_id})[refund_id]
    assert (result["status"], result["reason"]) == ("compensated", "approval_rejected")
    assert "bob" in result["error"] and "fraud suspected" in result["error"]
    statuses = llm_system.db("flights").execute(
        "SELECT DISTINCT status FROM flight_bookings WHERE booking_id = ?", (ref,)
    )
    assert [r[0] for r in statuses] == ["held"]
    # A decision on a saga no longer waiting is refused by the CLI.
    again = cli(llm_system, "approvals", "approve", refund_id, "--why", "oops")
    assert again.returncode == 3
