"""The dead-letter topic written in Kafka transactions (exactly-once services) is read to its
end: its last offsets are commit markers, which no consumer ever receives, so `itinerant dlq`
must not wait for them (a real broker; an aborted letter is not listed)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from itinerant.brokers.connection import quiet_client_config
from itinerant.brokers.topics import ensure_topics
from itinerant.cli.dlq_io import read_snapshot
from itinerant.errors import HandlerError
from itinerant.runtime.dlq import dead_letter
from itinerant.settings import Settings
from itinerant.wire.envelope import InRecord

from .conftest import Broker

pytestmark = pytest.mark.integration


def letter(settings: Settings, n: int) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    record = InRecord(settings.agent_topic("search"), 0, n, b"k", b'{"n": %d}' % n, [])
    message = dead_letter(
        record,
        HandlerError(f"failure {n}"),
        service="search",
        dlq_topic=settings.dlq_topic,
        max_bytes=settings.record_max_bytes,
        attempts=1,
        saga_id=None,
    )
    return message.key, message.value, message.headers


def test_a_dlq_written_in_transactions_is_read_to_its_end(broker: Broker, tmp_path: Path) -> None:
    if broker.kind != "kafka":
        pytest.skip("transactions need Apache Kafka")
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        broker=broker.kind,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        data_dir=tmp_path,
        partitions=1,
    )
    ensure_topics(settings)
    producer = Producer(
        {
            **quiet_client_config(settings.kafka_bootstrap_servers, settings.broker_timeout_s),
            "transactional.id": f"test-{uuid.uuid4()}",
        }
    )
    producer.init_transactions(30)
    for n, commit in ((1, True), (2, False), (3, True)):
        producer.begin_transaction()
        key, value, headers = letter(settings, n)
        producer.produce(settings.dlq_topic, value=value, key=key, headers=headers)
        producer.flush(30)
        if commit:
            producer.commit_transaction(30)
        else:
            producer.abort_transaction(30)

    snapshot = read_snapshot(settings, deadline_s=15)

    assert sorted(e.origin_offset for e in snapshot.entries) == [1, 3]
