"""Against a real Tansu broker (the no-Java fallback) started by TansuBroker on a free port
19200-19299: reachability, explicit topic administration, a taken port. The embedded Apache
Kafka has its own in test_kafka_embedded.py."""

from __future__ import annotations

import gc
import random
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from itinerant.brokers.connection import (
    BrokerPortInUse,
    EmbeddedBrokerError,
    broker_reachable,
    port_open,
    require_broker,
)
from itinerant.brokers.tansu import TansuBroker
from itinerant.brokers.topics import (
    MissingTopics,
    TopicPartitionMismatch,
    check_topics,
    delete_topics,
    ensure_topics,
    partition_high_watermarks,
)
from itinerant.errors import BrokerUnavailable
from itinerant.settings import Settings

pytestmark = pytest.mark.integration

PORT_RANGE = range(19200, 19300)


def _free_ports() -> Iterator[int]:
    """Ports of the range nobody listens on and we can bind, in random order."""
    ports = list(PORT_RANGE)
    random.shuffle(ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        yield port


@pytest.fixture(scope="session")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    log_dir = tmp_path_factory.mktemp("tansu")
    last_error: Exception | None = None
    for attempt, port in enumerate(_free_ports()):
        if attempt >= 5:
            break
        broker = TansuBroker("127.0.0.1", port, startup_timeout_s=20.0)
        try:
            broker.start(log_dir / f"broker-{port}.log")
        except EmbeddedBrokerError as exc:  # lost a race for the port: try another
            last_error = exc
            continue
        try:
            yield broker
        finally:
            # Free lingering Kafka clients: Tansu drains open connections for ~5 s on SIGTERM.
            gc.collect()
            broker.stop()
        assert not broker.running
        return
    pytest.fail(f"could not start an embedded broker in {PORT_RANGE}: {last_error}")


@pytest.fixture()
def settings(tansu: TansuBroker) -> Settings:
    """Settings pointing at the test broker, with a topic prefix of its own per test."""
    return Settings().model_copy(
        update={
            "kafka_bootstrap_servers": tansu.bootstrap,
            "broker": "tansu",
            "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
            "partitions": 3,
            "replication_factor": 1,
            "broker_timeout_s": 5.0,
        }
    )


def _partition_counts(settings: Settings) -> dict[tuple[str, int], int]:
    return partition_high_watermarks(settings, settings.all_topics())


def test_broker_is_up(tansu: TansuBroker) -> None:
    assert tansu.running
    assert tansu.pid is not None
    assert broker_reachable(tansu.bootstrap, timeout_s=5.0)
    require_broker(tansu.bootstrap, timeout_s=5.0)


def test_ensure_topics_creates_all_and_is_idempotent(settings: Settings) -> None:
    wanted = settings.all_topics()
    created = ensure_topics(settings)
    assert sorted(created) == sorted(wanted)

    marks = _partition_counts(settings)
    for topic in wanted:
        partitions = sorted(p for (t, p) in marks if t == topic)
        assert partitions == list(range(settings.partitions)), topic

    assert ensure_topics(settings) == []
    check_topics(settings)  # all there: no error


def test_check_topics_names_missing_ones(settings: Settings) -> None:
    present = settings.topic("present")
    ensure_topics(settings, [present])
    absent = [settings.topic("absent-1"), settings.topic("absent-2")]
    with pytest.raises(MissingTopics) as info:
        check_topics(settings, [present, *absent])
    message = str(info.value)
    for name in absent:
        assert name in message
    assert present not in message
    assert "itinerant topics create" in message
    # Checking must not auto-create them (Tansu does so for a metadata request naming a topic).
    with pytest.raises(MissingTopics):
        check_topics(settings, absent)


def test_partition_count_mismatch_is_reported(settings: Settings) -> None:
    topic = settings.topic("mismatch")
    two = settings.model_copy(update={"partitions": 2})
    assert ensure_topics(two, [topic]) == [topic]
    other = settings.topic("fresh")
    with pytest.raises(TopicPartitionMismatch) as info:
        ensure_topics(settings, [topic, other])
    message = str(info.value)
    assert topic in message
    assert "has 2" in message
    assert "ITINERANT_PARTITIONS=3" in message
    assert "itinerant topics delete" in message
    assert "ITINERANT_PARTITIONS to match" in message
    assert not info.value.retryable
    # Nothing was created by the failed call.
    with pytest.raises(MissingTopics):
        check_topics(settings, [other])


def test_high_watermarks_grow_after_producing(settings: Settings) -> None:
    topic = settings.topic("watermarks")
    ensure_topics(settings, [topic])
    before = partition_high_watermarks(settings, [topic])
    assert before == {(topic, p): 0 for p in range(settings.partitions)}

    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "linger.ms": 0})
    n = 12
    for i in range(n):
        producer.produce(topic, key=f"k{i}", value=b"x", partition=0)
        # One batch per message: Tansu's latest offset is exact only then.
        assert producer.flush(10.0) == 0

    deadline = time.monotonic() + 10.0
    after = partition_high_watermarks(settings, [topic])
    while after[(topic, 0)] < n and time.monotonic() < deadline:
        after = partition_high_watermarks(settings, [topic])
    assert after[(topic, 0)] == n
    assert after[(topic, 1)] == 0
    # Missing topics are left out, not created.
    assert partition_high_watermarks(settings, [settings.topic("nope")]) == {}
    with pytest.raises(MissingTopics):
        check_topics(settings, [settings.topic("nope")])


def test_delete_topics(settings: Settings) -> None:
    topic = settings.topic("doomed")
    ensure_topics(settings, [topic])
    assert delete_topics(settings, [topic, settings.topic("never-was")]) == [topic]
    with pytest.raises(MissingTopics):
        check_topics(settings, [topic])


def test_refuses_a_taken_port(tansu: TansuBroker, tmp_path: Path) -> None:
    second = TansuBroker(tansu.host, tansu.port)
    with pytest.raises(BrokerPortInUse) as info:
        second.start(tmp_path / "second.log")
    message = str(info.value)
    assert f"port 127.0.0.1:{tansu.port} is already in use" in message
    assert "ITINERANT_BROKER=external" in message
    assert "KAFKA_BOOTSTRAP_SERVERS" in message
    assert second.pid is None
    assert not second.running
    assert tansu.running


def test_require_broker_on_closed_port_fails_fast() -> None:
    port = next(p for p in _free_ports() if not port_open("127.0.0.1", p))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable) as info:
        require_broker(f"127.0.0.1:{port}", timeout_s=2.0)
    assert time.monotonic() - started < 4.0
    assert "itinerant up" in str(info.value)
    assert "KAFKA_BOOTSTRAP_SERVERS" in str(info.value)


def test_start_and_stop_a_second_broker_as_context_manager(tmp_path: Path) -> None:
    port = next(p for p in _free_ports() if not port_open("127.0.0.1", p))
    with TansuBroker("127.0.0.1", port) as broker:
        broker.start(tmp_path / "ctx.log")
        pid = broker.pid
        assert pid is not None
        assert broker.running
        assert broker_reachable(broker.bootstrap, timeout_s=5.0)
    assert not broker.running
    assert broker.stop() is not None  # idempotent
    assert not port_open("127.0.0.1", port)
    assert "listening on" in (tmp_path / "ctx.log").read_text()
