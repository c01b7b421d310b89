"""The embedded Apache Kafka itself: ready on a metadata answer, storage kept across a restart,
explicit topic configs, and a clear error for a taken port or foreign storage."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from itinerant.brokers.connection import BrokerPortInUse, broker_reachable, port_open
from itinerant.brokers.kafka import KafkaNode, KafkaStorageError
from itinerant.brokers.topics import ensure_topics
from itinerant.settings import Settings

from .conftest import Broker, free_port

pytestmark = pytest.mark.integration


def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"read-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    try:
        for _ in range(100):  # at most 100 polls of 0.2 s: bounded, stops when all are read
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                values.append(message.value())
            if len(values) >= expected:
                break
    finally:
        consumer.close()
    return values


def test_what_was_published_before_a_stop_is_there_after_a_start(tmp_path: Path) -> None:
    node = KafkaNode(storage=tmp_path / "kafka", port=free_port(), controller_port=free_port())
    node.start(tmp_path / "kafka.log")
    settings = Settings(kafka_bootstrap_servers=node.bootstrap, topic_prefix="keep.", partitions=1)
    try:
        assert broker_reachable(node.bootstrap, 5.0)
        topic = settings.topic("kept")
        assert ensure_topics(settings, [topic]) == [topic]
        producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all"})
        for i in range(5):
            producer.produce(topic, value=f"m{i}".encode(), partition=0)
        assert producer.flush(10) == 0
    finally:
        assert node.stop() is not None
    assert not port_open(node.host, node.port)
    cluster_id = (tmp_path / "kafka" / "cluster.id").read_text().strip()

    again = KafkaNode(storage=tmp_path / "kafka", port=node.port, controller_port=free_port())
    again.start(tmp_path / "kafka.log")
    try:
        assert (tmp_path / "kafka" / "cluster.id").read_text().strip() == cluster_id
        assert _read_all(again.bootstrap, topic, 5) == [f"m{i}".encode() for i in range(5)]
        # Created once: a second ensure finds it.
        assert ensure_topics(settings, [topic]) == []
    finally:
        again.stop()


def test_topics_are_created_with_explicit_configs(broker: Broker) -> None:
    if broker.kind != "kafka":
        pytest.skip("topic configs are Apache Kafka's")
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        topic_prefix=f"cfg{uuid.uuid4().hex[:6]}.",
        partitions=3,
        topic_retention_ms=3_600_000,
    )
    topic = settings.requests_topic
    ensure_topics(settings, [topic])
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["retention.ms"].value == "3600000"
    assert configs["min.insync.replicas"].value == "1"  # one broker: 1; replicated: 2
    assert configs["cleanup.policy"].value == "delete"
    metadata = admin.list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 3


def test_a_taken_port_is_refused_with_what_to_do(broker: Broker, tmp_path: Path) -> None:
    if broker.kind != "kafka":
        pytest.skip("needs the embedded Apache Kafka")
    host, port = broker.bootstrap.split(":")
    second = KafkaNode(storage=tmp_path / "second", host=host, port=int(port))
    with pytest.raises(BrokerPortInUse) as info:
        second.start(tmp_path / "second.log")
    message = info.value.describe()
    assert f"port {host}:{port} is already in use" in message
    assert "ITINERANT_BROKER=external" in message
    assert not second.running
    assert broker_reachable(broker.bootstrap, 5.0)  # the running one is untouched


def test_storage_of_another_cluster_is_refused(tmp_path: Path) -> None:
    storage = tmp_path / "kafka"
    node = KafkaNode(storage=storage, port=free_port(), controller_port=free_port())
    node.start(tmp_path / "a.log")
    node.stop()
    foreign = KafkaNode(
        storage=storage,
        port=free_port(),
        controller_port=free_port(),
        cluster_id="AAAAAAAAAAAAAAAAAAAAAA",
    )
    with pytest.raises(KafkaStorageError) as info:
        foreign.start(tmp_path / "b.log")
    message = info.value.describe()
    assert "belongs to cluster" in message
    assert f"remove {storage}" in message
    assert not foreign.running


def test_a_cluster_id_starting_with_a_dash_formats(tmp_path: Path) -> None:
    # Cluster ids are URL-safe base64: a quarter of them start with "-", which the storage
    # tool would read as an option unless passed as --cluster-id=<id>.
    node = KafkaNode(
        storage=tmp_path / "kafka",
        port=free_port(),
        controller_port=free_port(),
        cluster_id="-AAAAAAAAAAAAAAAAAAAAA",
    )
    node.start(tmp_path / "kafka.log")
    try:
        assert broker_reachable(node.bootstrap, 5.0)
    finally:
        node.stop()
