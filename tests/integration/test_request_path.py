"""The request path on a real broker: every service a real process, started by the supervisor."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from itinerant.cli.kcat import kcat_env
from services.contracts.trip import Traveller, TripRequest

from .conftest import System

pytestmark = pytest.mark.integration


def test_trip_completes_and_books_once(system: System) -> None:
    saga_id = system.publish("trip.json")
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "completed", result
    confirmation = result["output"]["confirmation"]
    assert confirmation["reference"] == f"IT-{saga_id[:8].upper()}"
    flights = (
        system.db("flights")
        .execute(
            "SELECT leg, status FROM flight_bookings WHERE saga_id = ? ORDER BY leg", (saga_id,)
        )
        .fetchall()
    )
    assert flights == [("back", "held"), ("out", "held")]
    hotels = (
        system.db("hotels")
        .execute("SELECT status FROM hotel_bookings WHERE saga_id = ?", (saga_id,))
        .fetchall()
    )
    assert hotels == [("held",)]


def test_sold_out_hotel_compensates_the_flight(system: System) -> None:
    saga_id = system.publish("sold-out.json")
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "compensated"
    assert result["reason"] == "sold_out"
    assert "Reykjavik" in result["error"]
    steps = [(s["agent"], s["action"], s["status"]) for s in result["steps"]]
    assert steps == [
        ("planner", "plan", "completed"),
        ("flights", "search", "completed"),
        ("hotels", "search", "completed"),
        ("validator", "run", "completed"),
        ("approval", "gate", "completed"),
        ("flights", "book", "compensated"),
        ("hotels", "book", "failed"),
    ], result["steps"]
    flights = (
        system.db("flights")
        .execute("SELECT status FROM flight_bookings WHERE saga_id = ?", (saga_id,))
        .fetchall()
    )
    assert sorted(flights) == [("cancelled",), ("cancelled",)]


def test_bare_json_with_kcat_starts_a_saga(system: System) -> None:
    if shutil.which("kcat") is None:
        pytest.skip("kcat is not installed (make test installs it with apt-get)")
    request_id = str(uuid.uuid4())
    body = json.loads(Path("examples/requests/day-trip.json").read_text())
    body["request_id"] = request_id
    # Plain kcat, no headers, no key: exactly what a user with any Kafka client would send.
    # Debian's own kcat against Apache Kafka; against Tansu it needs a newer librdkafka.
    subprocess.run(
        [
            "kcat",
            "-P",
            "-b",
            system.settings.kafka_bootstrap_servers,
            "-t",
            system.settings.requests_topic,
        ],
        input=json.dumps(body).encode(),
        check=True,
        timeout=30,
        env=kcat_env() if system.settings.broker == "tansu" else None,
    )
    result = system.results({request_id})[request_id]
    assert result["status"] == "completed"
    # A same-day return needs no hotel: the hotel steps' filter skipped them.
    assert [(s["agent"], s["action"], s["status"]) for s in result["steps"]] == [
        ("planner", "plan", "completed"),
        ("flights", "search", "completed"),
        ("hotels", "search", "skipped"),
        ("validator", "run", "completed"),
        ("approval", "gate", "completed"),
        ("flights", "book", "completed"),
        ("hotels", "book", "skipped"),
        ("notifier", "run", "completed"),
    ]


def test_free_text_request_is_planned(system: System) -> None:
    saga_id = system.publish("free-text.json")
    result = system.results({saga_id})[saga_id]
    assert result["status"] == "completed"
    plan = result["output"]["plan"]
    assert (plan["origin"], plan["destination"], plan["travellers"]) == ("LHR", "FCO", 2)
    assert plan["planned_by"] == "deterministic-rules"


def test_cli_publish_wait_prints_the_result(system: System) -> None:
    env = system.settings.to_env()
    run = subprocess.run(
        [
            ".venv/bin/itinerant",
            "publish",
            "examples/requests/trip.json",
            "--wait",
            "--timeout",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**env, "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert '"status": "completed"' in run.stdout


def test_status_shows_steps_and_timeline(system: System) -> None:
    saga_id = system.publish(
        TripRequest(
            traveller=Traveller(name="Status Check"),
            origin="BCN",
            destination="AMS",
            depart_date="2027-09-01",
            return_date="2027-09-03",
        )  # type: ignore[arg-type]
    )
    system.results({saga_id})
    env = {**system.settings.to_env(), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    run = subprocess.run(
        [".venv/bin/itinerant", "status", saga_id, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    saga = json.loads(run.stdout)
    assert saga["state"] == "completed"
    assert [(s["agent"], s["branch"]) for s in saga["steps"]] == [
        ("planner", None),
        ("flights", 0),
        ("hotels", 1),
        ("validator", None),
        ("approval", None),
        ("flights", None),
        ("hotels", None),
        ("notifier", None),
    ]
    assert all(s["duration_ms"] >= 0 for s in saga["steps"])
    events = [t["event"] for t in saga["timeline"]]
    assert events[0] == "started" and events[-1] == "completed"
    assert "joined" in events  # the parallel search was gathered
    assert "approval_not_needed" in events  # under the threshold: the gate opened at once
