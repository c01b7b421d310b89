"""Helpers shared by the failure-handling tests (poison corpus, chaos, replay, shutdown):
a raw reader that keeps bytes as they are on the wire, the coordinator's saga view, the
``itinerant`` command as a subprocess, and checks of the bookings in the agents' databases."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from itinerant.brokers.connection import quiet_client_config
from itinerant.security.tokens import operator_headers
from itinerant.settings import Settings
from services.contracts.trip import Traveller, TripRequest

ITINERANT = str(Path(__file__).parents[2] / ".venv" / "bin" / "itinerant")

TERMINAL = frozenset({"completed", "compensated", "failed", "rejected"})
SETTLED = TERMINAL | {"parked"}


@dataclass(frozen=True)
class Raw:
    """One record exactly as stored: bytes, not parsed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> bytes | None:
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None

    def text(self, name: str) -> str | None:
        raw = self.header(name)
        return None if raw is None else raw.decode("utf-8", errors="replace")

    @property
    def key_text(self) -> str | None:
        return None if self.key is None else self.key.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return json.loads(self.value) if self.value else None
        except ValueError:
            return None


class RawReader:
    """Reads topics from the beginning without a consumer group, accumulating every record."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.settings = settings
        self.records: list[Raw] = []
        self._consumer = Consumer(
            {
                **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
                "group.id": f"itinerant-test-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                "allow.auto.create.topics": False,
            }
        )
        metadata = self._consumer.list_topics(timeout=settings.broker_timeout_s * 2)
        assignment = []
        for topic in topics:
            assert topic in metadata.topics, f"topic {topic} does not exist"
            for partition in metadata.topics[topic].partitions:
                assignment.append(TopicPartition(topic, partition, 0))
        self._consumer.assign(assignment)

    def poll(self, budget_s: float = 0.5) -> int:
        """Read what is there for up to ``budget_s``; returns how many records were new."""
        got = 0
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            message = self._consumer.poll(0.1)
            if message is None:
                if got:
                    break
                continue
            if message.error():
                continue
            self.records.append(
                Raw(
                    topic=message.topic(),
                    partition=message.partition(),
                    offset=message.offset(),
                    key=message.key(),
                    value=message.value(),
                    headers=list(message.headers() or []),
                )
            )
            got += 1
        return got

    def until(self, done: Callable[[list[Raw]], Any], timeout_s: float, what: str) -> list[Raw]:
        deadline = time.monotonic() + timeout_s
        while True:
            self.poll()
            if done(self.records):
                return self.records
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> RawReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- the coordinator's saga view --------------------------------------------------------------


def saga_view(settings: Settings, saga_id: str) -> dict[str, Any] | None:
    """One saga from the coordinator's HTTP view; None while unknown or while it is down."""
    url = f"http://127.0.0.1:{settings.coordinator_http_port}/sagas/{saga_id}"
    request = urllib.request.Request(url, headers=operator_headers(settings))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            loaded: dict[str, Any] = json.loads(response.read())
            return loaded
    except (urllib.error.URLError, OSError, ValueError):
        return None


def saga_states(settings: Settings, limit: int = 1000) -> dict[str, str] | None:
    """saga id -> state of the most recent sagas; None while the coordinator does not answer."""
    url = f"http://127.0.0.1:{settings.coordinator_http_port}/sagas?limit={limit}"
    request = urllib.request.Request(url, headers=operator_headers(settings))
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return {s["saga_id"]: s["state"] for s in body["sagas"]}


# --- the CLI ----------------------------------------------------------------------------------


def itinerant(
    settings: Settings, *args: str, timeout_s: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ITINERANT, *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={
            **settings.to_env(),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "COLUMNS": "250",
            **(env or {}),
        },
    )


# --- requests and bookings --------------------------------------------------------------------

CITIES = ("LIS", "BCN", "CDG", "FCO", "BER", "AMS", "LHR", "KEF")  # KEF: hotels sold out


def trip_requests(
    count: int, *, tag: str = "Trip", first_day: date | None = None
) -> list[TripRequest]:
    """``count`` round trips from Madrid, one traveller each, every eighth to Reykjavik (sold
    out), departures spread over 20 days so no flight fills up."""
    start = first_day or date(2027, 10, 1)
    out = []
    for i in range(count):
        depart = start + timedelta(days=i % 20)
        out.append(
            TripRequest(
                request_id=str(uuid.uuid4()),
                traveller=Traveller(name=f"{tag} {i}"),
                origin="MAD",
                destination=CITIES[i % len(CITIES)],
                depart_date=depart,
                return_date=depart + timedelta(days=3),
            )
        )
    return out


def readonly_db(settings: Settings, service: str) -> Any:
    """A service's state, read only: its schema in PostgreSQL with ITINERANT_STATE_URL, else
    its SQLite file. Both answer ``execute(sql)`` with rows to iterate, and ``close()``."""
    if settings.state_url is not None:
        import psycopg

        from itinerant.runtime.store_postgres import schema_name

        return psycopg.connect(
            settings.state_url.get_secret_value(),
            autocommit=True,
            options=f"-c search_path={schema_name(service)} -c default_transaction_read_only=on",
        )
    path = settings.data_dir / "state" / f"{service}.db"
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


@dataclass
class Bookings:
    flights: list[tuple[str, str, str]]  # booking_id, leg, status
    hotels: list[tuple[str, str]]  # booking_id, status

    @property
    def flight_ids(self) -> set[str]:
        return {b for b, _, _ in self.flights}

    @property
    def hotel_ids(self) -> set[str]:
        return {b for b, _ in self.hotels}


def bookings_by_saga(settings: Settings) -> dict[str, Bookings]:
    found: dict[str, Bookings] = {}
    flights = readonly_db(settings, "flights")
    hotels = readonly_db(settings, "hotels")
    try:
        for saga_id, booking_id, leg, status in flights.execute(
            "SELECT saga_id, booking_id, leg, status FROM flight_bookings"
        ):
            found.setdefault(saga_id, Bookings([], [])).flights.append((booking_id, leg, status))
        for saga_id, booking_id, status in hotels.execute(
            "SELECT saga_id, booking_id, status FROM hotel_bookings"
        ):
            found.setdefault(saga_id, Bookings([], [])).hotels.append((booking_id, status))
    finally:
        flights.close()
        hotels.close()
    return found


def booking_problems(
    states: dict[str, str], bookings: dict[str, Bookings], sold_out: set[str]
) -> list[str]:
    """Every way the bookings disagree with exactly-once and with the sagas' outcomes."""
    problems = []
    for saga_id, state in states.items():
        made = bookings.get(saga_id, Bookings([], []))
        if len(made.flight_ids) > 1:
            problems.append(f"{saga_id}: {len(made.flight_ids)} flight bookings {made.flights}")
        if len(made.hotel_ids) > 1:
            problems.append(f"{saga_id}: {len(made.hotel_ids)} hotel bookings {made.hotels}")
        if made.flights and len(made.flights) != 2:
            problems.append(f"{saga_id}: flight booking without both legs {made.flights}")
        held_flights = [s for _, _, s in made.flights if s == "held"]
        held_rooms = [s for _, s in made.hotels if s == "held"]
        if state == "compensated" and (held_flights or held_rooms):
            problems.append(f"{saga_id}: compensated but still holds {made.flights} {made.hotels}")
        if state == "completed":
            if len(held_flights) != 2:
                problems.append(f"{saga_id}: completed without a held flight {made.flights}")
            if len(held_rooms) != 1:
                problems.append(f"{saga_id}: completed without a held room {made.hotels}")
            if saga_id in sold_out:
                problems.append(f"{saga_id}: completed a sold-out trip")
    return problems


def results_per_saga(settings: Settings, saga_ids: set[str]) -> Counter[str]:
    """How many results of each saga a read_committed reader finds on the results topic."""

    def complete(records: list[Raw]) -> bool:
        return {r.key_text for r in records} >= saga_ids

    with RawReader(settings, [settings.results_topic]) as reader:
        reader.until(complete, 60, "a result of every saga")
        reader.poll(3.0)  # and whatever else is there
        records = reader.records
    return Counter(r.key_text for r in records if r.key_text in saga_ids)


def uncommitted_count(settings: Settings, topic: str) -> int:
    """Records on ``topic`` as a read_uncommitted reader sees them (aborted ones included)."""
    consumer = Consumer(
        {
            **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
            "group.id": "itinerant-test-uncommitted",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        total = 0
        for partition in metadata.topics[topic].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            total += high - low
        return total
    finally:
        consumer.close()


#: The long runs, in `make soak` and not in `make test` (whose 25 minutes they would break).
soak_only = pytest.mark.skipif(
    os.environ.get("ITINERANT_SOAK") != "1",
    reason="a long run of `make soak` (ITINERANT_SOAK=1)",
)
