"""Dead letters that always fit, and operator output that cannot drive the terminal, on a real
broker: an agent dead-letters a record close to Kafka's limit as a truncated copy pointing at
the original, keeps working, and `itinerant dlq` shows hostile content escaped."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from confluent_kafka import Producer

from itinerant.brokers.connection import quiet_client_config
from itinerant.cli.dlq_io import read_original
from itinerant.wire.envelope import REPLAY_COUNT, OutMessage

from .conftest import System
from .test_bad_input import flights_message
from .test_dlq_replay import cli, copies_on_origin

pytestmark = pytest.mark.integration

HOSTILE = (
    "\x1b[31m\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\\x1b]0;owned\x07"
    "\x9b2Jall good\rFAKE\u202eevil\u202c\b[link=https://evil.example/]x[/link]"
)
RAW = ("\x1b", "\x9b", "\x07", "\r", "\b", "\u202e")


def produce(system: System, message: OutMessage) -> None:
    """Publish as a foreign client may: up to the topic's limit, not our producers' smaller one."""
    producer = Producer(
        {
            **quiet_client_config(
                system.settings.kafka_bootstrap_servers, system.settings.broker_timeout_s
            ),
            "message.max.bytes": 2_000_000,
        }
    )
    errors: list[Any] = []
    producer.produce(
        message.topic,
        value=message.value,
        key=message.key,
        headers=message.headers,
        on_delivery=lambda err, _m: errors.append(err) if err else None,
    )
    assert producer.flush(30) == 0 and not errors, errors


def entry_of(system: System, ce_id: str) -> dict[str, Any]:
    run = cli(system, "list", "--json")
    assert run.returncode == 0, run.stderr
    rows = [r for r in json.loads(run.stdout) if r["ce_id"] == ce_id]
    assert len(rows) == 1, rows
    return dict(rows[0])


def test_a_record_near_the_limit_is_dead_lettered_truncated_and_the_agent_goes_on(
    system: System,
) -> None:
    settings = system.settings
    saga_id = str(uuid.uuid4())
    body = json.dumps({"blob": "x" * 1_005_000}).encode()  # over ITINERANT_MAX_MESSAGE_BYTES
    envelope = flights_message(saga_id, data=body)
    message = system.sign(envelope.to_message(settings.agent_topic("flights")))
    bulky = OutMessage(
        message.topic,
        message.key,
        message.value,
        [*message.headers, ("x-bulk", b"b" * 20_000), ("x-note", b"kept")],
    )
    assert settings.record_max_bytes < len(bulky.value) + 20_000 < settings.topic_max_message_bytes
    produce(system, bulky)

    (letter,) = system.dead_letters(lambda s: s.headers.get("ce_id") == envelope.id)
    headers = letter.headers
    assert headers["x-dlq-reason"] == "oversized_header", headers  # a 20 kB header
    assert headers["x-dlq-truncated"] == "payload,headers"
    assert headers["x-dlq-dropped-headers"] == "x-bulk" and headers["x-note"] == "kept"
    assert int(headers["x-dlq-original-value-bytes"]) == len(bulky.value)
    assert int(headers["x-dlq-original-bytes"]) > settings.record_max_bytes
    where = (
        headers["x-dlq-origin-topic"],
        int(headers["x-dlq-origin-partition"]),
        int(headers["x-dlq-origin-offset"]),
    )
    assert where[0] == settings.agent_topic("flights")

    original = read_original(settings, *where)  # the pointer resolves to the whole record
    assert original is not None and original.value == bulky.value
    assert original.header("ce_id") == envelope.id.encode()
    assert original.header("x-bulk") == b"b" * 20_000

    after = system.publish("trip.json")  # the agent kept processing
    assert system.results({after})[after]["status"] == "completed"

    row = entry_of(system, envelope.id)
    assert row["truncated"] == ["payload", "headers"]
    shown = cli(system, "show", row["id"])
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "truncated copy" in text
    assert f"itinerant kcat -C -t {where[0]} -p {where[1]} -o {where[2]} -c 1" in text

    replay = cli(system, "replay", row["id"])  # from the original, read back from its offset
    assert replay.returncode == 0, replay.stderr
    copies = copies_on_origin(system, envelope.id, 2)
    assert copies[-1].headers.get(REPLAY_COUNT) == "1"
    assert copies[-1].headers.get("x-bulk") == "b" * 20_000
    assert "x-dlq-truncated" not in copies[-1].headers


def test_dlq_list_and_show_escape_what_a_crafted_message_carries(system: System) -> None:
    settings = system.settings
    saga_id = str(uuid.uuid4())
    envelope = flights_message(saga_id, data=json.dumps({"note": HOSTILE}).encode())
    message = system.sign(envelope.to_message(settings.agent_topic("flights")))
    system.publish_raw(
        message.topic, message.value, message.key, [*message.headers, ("x-note", HOSTILE.encode())]
    )
    stranger = str(uuid.uuid4())  # unsigned, with a hostile saga id: dead-lettered as it is
    system.publish_raw(
        settings.agent_topic("flights"),
        HOSTILE.encode(),
        None,
        [("ce_id", stranger.encode()), ("ce_sagaid", ("saga-" + HOSTILE).encode())],
    )
    system.dead_letters(lambda s: s.headers.get("ce_id") in (envelope.id, stranger), count=2)

    listed = cli(system, "list")
    assert listed.returncode == 0, listed.stderr
    assert all(c not in listed.stdout for c in RAW)
    for ce_id in (envelope.id, stranger):
        shown = cli(system, "show", entry_of(system, ce_id)["id"])
        assert shown.returncode == 0, shown.stderr
        assert all(c not in shown.stdout + shown.stderr for c in RAW), shown.stdout
        assert "\\x1b" in shown.stdout and "\\u202e" in shown.stdout
        assert "[link=https://evil.example/]x[/link]" in shown.stdout  # shown, not applied
