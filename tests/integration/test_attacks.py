"""Attacks by anyone who can produce to the broker, on the default `itinerant up` (signatures on):
each is refused, and the legitimate path beside it still works (docs/security.md)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from itinerant.coordinator import repository
from itinerant.coordinator.saga_model import Saga
from itinerant.security.signing import SIGNATURE_HEADER, mesh_keys, visit_digest
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, OutMessage, replace_headers
from itinerant.wire.events import StepEvent, StepEventKind, event_type
from itinerant.wire.ids import derived_id, name_id
from itinerant.wire.slip import APPROVAL_VISIT, Slip, Step, Visit

from .conftest import Broker, System, poll_until, start_system

pytestmark = pytest.mark.integration

BIG_TRIP = {
    "traveller": {"name": "Big Spender"},
    "origin": "BCN",
    "destination": "AMS",
    "depart_date": "2027-05-01",
    "return_date": "2027-05-03",
    "travellers": 3,
}


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(broker, tmp_path_factory.mktemp("attacks"), approval_threshold_usd=1000)
    try:
        yield running
    finally:
        running.supervisor.stop()


def saga(system: System, saga_id: str) -> Saga | None:
    with system.db("coordinator") as conn:
        return repository.load(conn, saga_id)


def in_state(system: System, saga_id: str, state: str) -> Saga:
    found: Saga = poll_until(
        lambda: (s := saga(system, saga_id)) is not None and s.state.value == state and s,
        60,
        f"saga {saga_id} {state}",
    )
    return found


def request(system: System, body: dict[str, Any], principal: str | None = None) -> str:
    from services.contracts.trip import TripRequest

    model = TripRequest.model_validate({**body, "request_id": str(uuid.uuid4())})
    return system.publish(model, principal=principal)


def send(system: System, message: OutMessage) -> None:
    system.publish_raw(message.topic, message.value, message.key, message.headers)


def refused(system: System, ce_id: str) -> dict[str, str]:
    letter = system.dead_letters(lambda s: s.headers.get("ce_id") == ce_id)[0]
    return letter.headers


def decision(system: System, saga_id: str, source: str) -> OutMessage:
    body = {"saga_id": saga_id, "decision": "approve", "by": "operator", "why": "trust me"}
    return Envelope(
        id=str(uuid.uuid4()),
        type="itinerant.saga.approval_decided.v1",
        source=source,
        saga_id=saga_id,
        data=json.dumps(body).encode(),
    ).to_message(system.settings.events_topic)


def approve(system: System, saga_id: str) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "itinerant.cli.main",
            "approvals",
            "approve",
            saga_id,
            "--why",
            "ok",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**system.settings.to_env(), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr


def booking_message(system: System, saga_id: str, visits: list[Visit], source: str) -> Envelope:
    from services.contracts.trip import Plan, TripDocument, TripRequest

    trip = TripRequest.model_validate({**BIG_TRIP, "request_id": saga_id})
    plan = Plan(
        flow="trip",
        origin="BCN",
        destination="AMS",
        depart_date=trip.depart_date,
        return_date=trip.return_date,
        travellers=3,
        planned_by="attacker",
    )
    return Envelope(
        id=str(uuid.uuid4()),
        type="itinerant.flights.book.v1",
        source=source,
        saga_id=saga_id,
        data=TripDocument(request=trip, plan=plan).model_dump_json().encode(),
        slip=Slip(
            steps=[Step(agent="planner", action="plan"), Step(agent="flights", action="book")],
            next=1,
            visited=visits,
        ),
        budget=Budget(max_hops=10, deadline=datetime.now(UTC) + timedelta(minutes=5)),
    )


def bookings_of(system: System, key: str) -> int:
    with system.db("flights") as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM flight_bookings WHERE idempotency_key = ?", (key,)
        ).fetchone()
    return int(row[0])


def test_only_a_signed_approver_passes_the_gate(system: System) -> None:
    saga_id = request(system, BIG_TRIP, principal="alice")
    in_state(system, saga_id, "awaiting_approval")
    bare = decision(system, saga_id, "/clients/operator")  # unsigned, claims to be the operator
    by_customer = system.sign(decision(system, saga_id, "/clients/alice"), "alice")
    for forged in (bare, by_customer):
        send(system, forged)
        letter = refused(system, forged.header("ce_id").decode())  # type: ignore[union-attr]
        assert letter["x-dlq-reason"] == "unauthenticated"
    assert in_state(system, saga_id, "awaiting_approval").approval is not None
    approve(system, saga_id)
    done = in_state(system, saga_id, "completed")
    assert any(t.event == "approved" and "by operator" in t.detail for t in done.timeline)


def test_a_hand_written_booking_is_refused(system: System) -> None:
    saga_id = str(uuid.uuid4())
    now = datetime.now(UTC)
    keys = mesh_keys(system.settings)
    # 1. unsigned, straight onto the flights topic
    unsigned = booking_message(system, saga_id, [], "/itinerant/coordinator")
    # 2. signed by a genuine service (the notifier, as if compromised) without the visits
    no_visits = booking_message(system, saga_id, [], "/itinerant/notifier")
    # 3. the same with validator and approval visits the notifier forged
    forged: list[Visit] = []
    for index, name in enumerate(("validator", APPROVAL_VISIT)):
        visit = Visit(agent=name, id=str(uuid.uuid4()), at=now, step=index)
        digest = visit_digest(saga_id, visit, forged[-1].sig if forged else None)
        signature = keys.ring.private("notifier").sign(digest)
        forged.append(visit.model_copy(update={"sig": base64.b64encode(signature).decode()}))
    fake_visits = booking_message(system, saga_id, forged, "/itinerant/notifier")
    topic = system.settings.agent_topic("flights")
    send(system, unsigned.to_message(topic))
    send(system, keys.sign(no_visits.to_message(topic), "notifier"))
    send(system, keys.sign(fake_visits.to_message(topic), "notifier"))
    for attack in (unsigned, no_visits, fake_visits):
        assert refused(system, attack.id)["x-dlq-reason"] == "unauthenticated"
        assert bookings_of(system, attack.id) == 0
    # The legitimate path still books.
    legit = request(system, {**BIG_TRIP, "travellers": 1})
    assert system.results({legit})[legit]["status"] == "completed"


def test_a_stranger_cannot_refund_someone_elses_booking(system: System) -> None:
    trip = request(system, {**BIG_TRIP, "travellers": 1}, principal="carol")
    result = system.results({trip})[trip]
    assert result["status"] == "completed", result
    ref = result["output"]["flight"]["booking_id"]
    refund = {"traveller": {"name": "M"}, "kind": "refund", "booking_ref": ref}
    stranger = request(system, refund, principal="mallory")
    anonymous = request(system, refund)
    answers = system.results({stranger, anonymous})
    for answer in answers.values():
        assert answer["status"] != "completed" and answer["reason"] == "unknown_booking", answer
    with system.db("flights") as conn:
        statuses = conn.execute(
            "SELECT DISTINCT status FROM flight_bookings WHERE booking_id = ?", (ref,)
        ).fetchall()
    assert statuses == [("held",)]
    owner = request(system, refund, principal="carol")  # $366: under the approval threshold
    done = system.results({owner})[owner]
    assert done["status"] == "completed" and done["output"]["refund"]["status"] == "refunded"


def test_budget_cannot_be_inflated_or_dropped(system: System) -> None:
    topic = system.settings.agent_topic("flights")
    base = booking_message(system, str(uuid.uuid4()), [], "/itinerant/coordinator")
    signed = system.sign(base.to_message(topic))
    huge = Budget(max_hops=10**6, deadline=datetime(9999, 1, 1, tzinfo=UTC), max_tokens=10**15)
    inflated = OutMessage(
        topic,
        signed.key,
        signed.value,
        replace_headers(signed.headers, [("ce_budget", huge.encode())]),
    )
    dropped = OutMessage(
        topic, signed.key, signed.value, [h for h in signed.headers if h[0] != "ce_budget"]
    )
    ids = []
    for attack in (inflated, dropped):
        attack_id = str(uuid.uuid4())
        tampered = replace_headers(attack.headers, [("ce_id", attack_id.encode())])
        send(system, OutMessage(topic, attack.key, attack.value, tampered))
        ids.append(attack_id)
    for attack_id in ids:
        assert refused(system, attack_id)["x-dlq-reason"] == "unauthenticated"
    # At ingress a greedy request is clamped to the configured maxima.
    greedy = request(system, {**BIG_TRIP, "travellers": 1, "max_hops": 100, "max_tokens": 10**9})
    assert system.results({greedy})[greedy]["status"] == "completed"
    limits = saga(system, greedy)
    assert limits is not None and limits.limits is not None
    assert limits.limits.max_hops <= system.settings.default_max_hops
    assert limits.limits.max_tokens <= system.settings.default_max_tokens


def test_a_forged_event_neither_completes_nor_overwrites_a_saga(system: System) -> None:
    saga_id = request(system, {**BIG_TRIP, "travellers": 1})
    assert system.results({saga_id})[saga_id]["status"] == "completed"
    event = StepEvent(
        kind=StepEventKind.COMPLETED,
        saga_id=saga_id,
        agent="notifier",
        action="run",
        step=9,
        message_id=str(uuid.uuid4()),
        at=datetime.now(UTC),
        final=True,
        output={"hacked": True},
    )
    forged = [
        Envelope(
            id=str(uuid.uuid4()),
            type=event_type(StepEventKind.COMPLETED),
            source=source,
            saga_id=saga_id,
            data=event.model_dump_json().encode(),
        ).to_message(system.settings.events_topic)
        for source in ("/itinerant/notifier", "/itinerant/flights")
    ]
    send(system, forged[0])  # unsigned
    send(system, mesh_keys(system.settings).sign(forged[1], "flights"))  # flights as notifier
    for message in forged:
        header = message.header("ce_id")
        assert header is not None
        assert refused(system, header.decode())["x-dlq-reason"] == "unauthenticated"
    results = system.collect(
        [system.settings.results_topic],
        lambda seen: any(s.key == saga_id for s in seen),
        30,
        "the saga's result",
    )
    assert [s.value["status"] for s in results if s.key == saga_id and s.value] == ["completed"]
    assert "hacked" not in json.dumps([s.value for s in results if s.key == saga_id])


def test_a_stranger_cannot_pre_claim_a_future_message_id(system: System) -> None:
    request_ce_id = str(uuid.uuid4())
    saga_id = str(uuid.uuid4())
    planner_id = derived_id(request_ce_id, "coordinator", "dispatch")  # predictable
    topic = system.settings.agent_topic("planner")
    claim = Envelope(
        id=planner_id,
        type="itinerant.planner.plan.v1",
        source="/itinerant/coordinator",
        saga_id=str(uuid.uuid4()),
        data=b"{}",
        slip=Slip(steps=[Step(agent="planner", action="plan")]),
        budget=Budget(max_hops=5, deadline=datetime.now(UTC) + timedelta(minutes=5)),
    ).to_message(topic)
    send(system, claim)  # unsigned
    send(
        system,
        mesh_keys(system.settings).sign(
            OutMessage(
                topic,
                claim.key,
                claim.value,
                replace_headers(claim.headers, [("ce_source", b"/itinerant/notifier")]),
            ),
            "notifier",
        ),
    )  # signed by another service: its id is its own, not the coordinator's
    letters = system.dead_letters(lambda s: s.headers.get("ce_id") == planner_id, count=2)
    assert {s.headers["x-dlq-reason"] for s in letters} == {"unauthenticated", "schema_violation"}
    body = json.dumps({**BIG_TRIP, "travellers": 1, "request_id": saga_id}).encode()
    system.publish_raw(
        system.settings.requests_topic, body, saga_id.encode(), [("ce_id", request_ce_id.encode())]
    )
    assert system.results({saga_id})[saga_id]["status"] == "completed"


def test_signatures_are_on_the_wire(system: System) -> None:
    saga_id = request(system, {**BIG_TRIP, "travellers": 1})
    results = system.collect(
        [system.settings.results_topic],
        lambda seen: any(s.key == saga_id for s in seen),
        60,
        "the result",
    )
    result = next(s for s in results if s.key == saga_id)
    assert result.headers["ce_signer"] == "coordinator"
    assert SIGNATURE_HEADER in result.headers


def test_a_malformed_request_cannot_overwrite_another_sagas_result(system: System) -> None:
    saga_id = request(system, {**BIG_TRIP, "travellers": 1})
    assert system.results({saga_id})[saga_id]["status"] == "completed"
    ce_id = str(uuid.uuid4())
    system.publish_raw(
        system.settings.requests_topic,
        json.dumps({"request_id": saga_id, "origin": 7}).encode(),
        saga_id.encode(),
        [("ce_id", ce_id.encode())],
    )
    letter = refused(system, ce_id)
    assert letter["x-dlq-reason"] == "invalid_request"
    position = name_id(  # the refusal is answered under the id of its own position
        letter["x-dlq-origin-topic"],
        int(letter["x-dlq-origin-partition"]),
        int(letter["x-dlq-origin-offset"]),
    )
    assert system.results({position})[position]["status"] == "rejected"
    results = system.collect(
        [system.settings.results_topic],
        # Both keys: they may sit on different partitions, read in any interleaving.
        lambda seen: {position, saga_id} <= {s.key for s in seen if s.value},
        30,
        "the refusal's result and the saga's own",
    )
    # The saga's own result (an outbox may send it more than once) and nothing else under its id.
    assert {s.value["status"] for s in results if s.key == saga_id and s.value} == {"completed"}
    done = saga(system, saga_id)
    assert done is not None and done.state.value == "completed"


def test_oversized_headers_and_unusable_saga_ids_are_refused_on_decode(system: System) -> None:
    topic = system.settings.agent_topic("planner")
    crafted = [
        Envelope(
            id=str(uuid.uuid4()),
            type="itinerant.planner.plan.v1",
            source="/itinerant/coordinator",
            saga_id=saga_id,
            data=b"{}",
            slip=Slip(steps=[Step(agent="planner", action="plan")]),
            budget=Budget(max_hops=5, deadline=datetime.now(UTC) + timedelta(minutes=5)),
        ).to_message(topic)
        for saga_id in (str(uuid.uuid4()), "saga\x1b[2J\x1b]8;;http://evil\x07")
    ]
    stuffed = OutMessage(
        topic,
        crafted[0].key,
        crafted[0].value,
        [*crafted[0].headers, *((f"x-pad-{i}", b"p" * 64) for i in range(80))],
    )
    for message in (stuffed, crafted[1]):
        send(system, system.sign(message, "coordinator"))
    reasons: dict[bytes, str] = {}
    for message in (stuffed, crafted[1]):
        ce_id = message.header("ce_id")
        assert ce_id is not None
        reasons[ce_id] = refused(system, ce_id.decode())["x-dlq-reason"]
    assert sorted(reasons.values()) == ["invalid_saga_id", "oversized_header"]
    saga_id = request(system, {**BIG_TRIP, "travellers": 1})  # the planner goes on
    assert system.results({saga_id})[saga_id]["status"] == "completed"
