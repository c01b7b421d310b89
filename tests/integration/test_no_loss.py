"""Faults outside the handlers, on a real broker (runtime/delivery.py): a locked state store and a
message the broker refuses. Each record is delivered or dead-lettered, never acknowledged and
lost, and the service goes on."""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from itinerant.brokers.connection import quiet_client_config
from services.contracts.trip import Traveller, TripRequest

from .conftest import Broker, System, poll_until, start_system
from .failure_helpers import itinerant
from .test_llm_agents import metric

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def system(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = start_system(
        broker,
        tmp_path_factory.mktemp("no-loss"),
        max_attempts=2,
        retry_base_delay_s=0.05,
        retry_max_delay_s=0.2,
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


def trip(name: str) -> TripRequest:
    return TripRequest(
        request_id=str(uuid.uuid4()),
        traveller=Traveller(name=name),
        origin="MAD",
        destination="LIS",
        depart_date="2027-06-01",
        return_date="2027-06-04",
    )


class StoreLock:
    """An exclusive lock on a service's SQLite store, held from another process's view (our
    own connection) until released: every read and write of the service waits, then fails."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def store_path(system: System, service: str) -> Path:
    return system.settings.data_dir / "state" / f"{service}.db"


def test_a_store_locked_for_a_while_delays_the_record_and_loses_nothing(system: System) -> None:
    before = metric(system, "validator", "itinerant_retries_total", reason="handling_failed")
    lock = StoreLock(store_path(system, "validator"))
    saga_id = system.publish(trip("Locked Briefly"))
    try:
        poll_until(
            lambda: (
                metric(system, "validator", "itinerant_retries_total", reason="handling_failed")
                > before
            ),
            60,
            "the validator failing on its locked store",
        )
    finally:
        lock.release()  # within the second try's busy wait: that try succeeds
    assert system.results({saga_id}, timeout_s=90)[saga_id]["status"] == "completed"
    letters = system.collect([system.settings.dlq_topic], lambda seen: True, 2, "dlq")
    assert not [s for s in letters if s.headers.get("ce_sagaid") == saga_id]


def test_a_store_locked_past_every_try_dead_letters_the_record_for_replay(
    system: System,
) -> None:
    lock = StoreLock(store_path(system, "validator"))
    saga_id = system.publish(trip("Locked Long"))
    try:
        [letter] = system.dead_letters(
            lambda s: (
                s.headers.get("ce_sagaid") == saga_id
                and s.headers.get("x-dlq-service") == "validator"
            ),
            timeout_s=90,
        )
    finally:
        lock.release()
    assert letter.headers["x-dlq-reason"] == "retries_exhausted"
    assert "locked" in letter.headers["x-dlq-error"]
    assert letter.value is not None  # the record as it came, payload and all
    replay = itinerant(system.settings, "dlq", "replay", "--saga", saga_id)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert system.results({saga_id}, timeout_s=90)[saga_id]["status"] == "completed"


def test_an_output_the_broker_refuses_becomes_a_notice_and_the_agent_goes_on(
    system: System,
) -> None:
    settings = system.settings
    target = settings.agent_topic("notifier")
    admin = AdminClient(
        quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s)
    )

    def set_max_bytes(value: str | None) -> None:
        """The topic's max.message.bytes set to ``value``, or back to the broker's default."""
        entry = ConfigEntry(
            "max.message.bytes",
            value,
            incremental_operation=AlterConfigOpType.SET if value else AlterConfigOpType.DELETE,
        )
        resource = ConfigResource(ResourceType.TOPIC, target, incremental_configs=[entry])
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)

    set_max_bytes("64")  # smaller than any step message: the broker refuses them all
    try:
        saga_id = system.publish(trip("Refused"))
        [notice] = system.dead_letters(
            lambda s: (
                s.headers.get("ce_sagaid") == saga_id
                and s.headers.get("x-dlq-reason") == "message_too_large"
            ),
            timeout_s=90,
        )
    finally:
        set_max_bytes(None)
    assert notice.headers["x-dlq-origin-topic"] == target
    assert notice.headers["x-dlq-origin-offset"] == "-1"  # it never reached its topic
    assert "payload" in notice.headers["x-dlq-truncated"]
    assert notice.headers.get("ce_id")  # names the message that could not go
    # The agent that could not forward goes on: the next saga passes the same way.
    after = system.publish(trip("After"))
    result = system.results({after}, timeout_s=90)[after]
    assert result["status"] == "completed", json.dumps(result)
