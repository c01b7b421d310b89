"""The operator's DLQ tooling on a real broker, through the real `itinerant dlq` command."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from itinerant.brokers.topics import ensure_topics
from itinerant.cli.kafka_io import Seen
from itinerant.operators.dlq_actions import ACTIONS_TOPIC
from itinerant.wire.envelope import REPLAY_COUNT

from .conftest import System, poll_until
from .test_bad_input import flights_message

pytestmark = pytest.mark.integration

ITINERANT = str(Path(__file__).parents[2] / ".venv" / "bin" / "itinerant")


def cli(
    system: System, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ITINERANT, "dlq", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env={
            **system.settings.to_env(),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "COLUMNS": "250",
            **(env or {}),
        },
    )


def listing(system: System, *args: str) -> list[dict[str, Any]]:
    run = cli(system, "list", "--json", *args)
    assert run.returncode == 0, run.stderr
    rows: list[dict[str, Any]] = json.loads(run.stdout)
    return rows


@pytest.fixture(scope="module")
def actions_topic(system: System) -> str:
    name = system.settings.topic(ACTIONS_TOPIC)
    ensure_topics(system.settings, [name])
    return name


def publish(system: System, saga_id: str, **kwargs: Any) -> tuple[str, Any]:
    message = flights_message(saga_id, **kwargs)
    out = system.sign(message.to_message(system.settings.agent_topic("flights")))
    system.publish_raw(out.topic, out.value, out.key, out.headers)
    return message.id, out


def copies_on_origin(system: System, ce_id: str, count: int) -> list[Seen]:
    def mine(seen: list[Seen]) -> list[Seen]:
        return [s for s in seen if s.headers.get("ce_id") == ce_id]

    seen = system.collect(
        [system.settings.agent_topic("flights")],
        lambda got: len(mine(got)) >= count,
        30,
        f"{count} copies of {ce_id} on the flights topic",
    )
    return mine(seen)


def test_replay_puts_the_original_back_and_refuses_to_do_it_twice(
    system: System, actions_topic: str
) -> None:
    saga_id = str(uuid.uuid4())
    ce_id, out = publish(system, saga_id, ce_type="itinerant.flights.book.v9")
    system.dead_letters(lambda s: s.headers.get("ce_id") == ce_id)

    rows = [r for r in listing(system, "--reason", "unsupported_version") if r["ce_id"] == ce_id]
    assert len(rows) == 1
    row = rows[0]
    assert row["status"] == "pending" and row["service"] == "flights"
    assert row["saga_id"] == saga_id and row["origin_topic"] == out.topic
    entry = row["id"]
    assert listing(system, "--reason", "no_such_reason") == []

    dry = cli(system, "replay", entry[:8], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would replay" in dry.stdout and "x-replay-count=1" in dry.stdout
    assert [r["status"] for r in listing(system, "--saga", saga_id)] == ["pending"]

    first = cli(system, "replay", entry[:8])
    assert first.returncode == 0, first.stderr
    copies = copies_on_origin(system, ce_id, 2)
    replayed = copies[1]
    assert replayed.key == saga_id
    assert replayed.headers[REPLAY_COUNT] == "1"
    assert not [h for h in replayed.headers if h.startswith("x-dlq-")]
    original = {k: v.decode() for k, v in out.headers}
    assert {k: v for k, v in replayed.headers.items() if k != REPLAY_COUNT} == original

    # Still poison: it is dead-lettered again, with the same reason, as a new entry.
    letters = system.dead_letters(lambda s: s.headers.get("ce_id") == ce_id, count=2)
    assert letters[1].headers["x-dlq-reason"] == "unsupported_version"
    assert letters[1].headers[REPLAY_COUNT] == "1"

    def both_listed() -> list[dict[str, Any]]:
        found = [r for r in listing(system, "--saga", saga_id) if r["ce_id"] == ce_id]
        return found if len(found) == 2 else []

    old, new = poll_until(both_listed, 30, "both dead letters in `dlq list`")
    assert old["id"] == entry and old["status"] == "replayed" and old["replays"] == 1
    assert old["actions"][0]["replay_count"] == 1
    assert old["later"] == [new["id"]]
    assert new["status"] == "pending" and new["replay_count"] == 1

    again = cli(system, "replay", entry)
    assert again.returncode == 3, again.stdout + again.stderr
    assert "--force" in again.stderr and "already replayed" in again.stderr

    forced = cli(system, "replay", entry, "--force")
    assert forced.returncode == 0, forced.stderr
    assert copies_on_origin(system, ce_id, 3)[2].headers[REPLAY_COUNT] == "2"
    assert (
        next(r for r in listing(system, "--status", "replayed") if r["id"] == entry)["replays"] == 2
    )


def test_discard_publishes_the_control_event_and_records_it(
    system: System, actions_topic: str
) -> None:
    saga_id = system.publish("trip.json")
    system.results({saga_id})  # a saga the coordinator knows
    ce_id, _out = publish(system, saga_id, data=b'{"request": 42}')
    system.dead_letters(lambda s: s.headers.get("ce_id") == ce_id)
    entry = poll_until(
        lambda: [r for r in listing(system, "--saga", saga_id) if r["ce_id"] == ce_id],
        30,
        "the dead letter in `dlq list`",
    )[0]
    assert entry["reason"] == "schema_violation"

    def shown_with_saga() -> dict[str, Any] | None:
        shown = cli(system, "show", entry["id"], "--json")
        assert shown.returncode == 0, shown.stderr
        body: dict[str, Any] = json.loads(shown.stdout)
        return body if body["saga"] is not None else None

    body = poll_until(shown_with_saga, 30, "`dlq show` with the saga from the coordinator")
    assert body["payload"] == {"request": 42}
    assert body["headers"]["x-dlq-reason"] == "schema_violation"
    assert body["saga"] is not None and body["saga"]["saga_id"] == saga_id  # the timeline
    table = cli(system, "show", entry["id"][:7])
    assert (
        table.returncode == 0 and "timeline" in table.stdout and "schema_violation" in table.stdout
    )

    assert cli(system, "discard", entry["id"]).returncode == 2  # --why is required
    done = cli(system, "discard", entry["id"], "--why", "customer cancelled")
    assert done.returncode == 0, done.stderr
    events = system.collect(
        [system.settings.events_topic],
        lambda seen: any(
            s.headers.get("ce_type") == "itinerant.saga.discard_requested.v1" and s.key == saga_id
            for s in seen
        ),
        30,
        "the discard_requested event",
    )
    event = [s for s in events if s.headers.get("ce_type") == "itinerant.saga.discard_requested.v1"]
    assert event[0].headers["ce_sagaid"] == saga_id and event[0].headers["ce_id"]
    assert event[0].value is not None
    assert event[0].value["saga_id"] == saga_id
    assert event[0].value["why"] == "customer cancelled"
    assert event[0].value["entry"] == entry["id"]
    assert event[0].value["by"]
    records = system.collect(
        [actions_topic],
        lambda seen: any(s.key == entry["id"] for s in seen),
        30,
        "the discard record",
    )
    record = next(s for s in records if s.key == entry["id"]).value
    assert record is not None
    assert record["action"] == "discarded" and record["why"] == "customer cancelled"
    assert set(record) == {"entry", "action", "at", "by", "why", "replay_count"}

    row = next(r for r in listing(system, "--saga", saga_id) if r["id"] == entry["id"])
    assert row["status"] == "discarded"
    assert cli(system, "discard", entry["id"], "--why", "again").returncode == 3
    assert cli(system, "replay", entry["id"]).returncode == 3


def test_unknown_id_is_a_usage_error(system: System) -> None:
    run = cli(system, "show", "zz")
    assert run.returncode == 2 and "dlq list" in run.stderr


def test_dlq_without_a_broker_fails_with_exit_1(system: System) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    run = cli(
        system,
        "list",
        env={"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "ITINERANT_BROKER_TIMEOUT_S": "1"},
    )
    assert run.returncode == 1
    assert f"127.0.0.1:{port}" in run.stderr and "itinerant up" in run.stderr
    assert time.monotonic() - started < 30
