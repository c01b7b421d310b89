"""Exactly-once processing (ITINERANT_PROCESSING_GUARANTEE=exactly_once) under the chaos of
test_replicas: two flights, two hotels and two coordinators on PostgreSQL, a random process
SIGKILLed every few seconds and one flights replica frozen past its session, so its partitions
move and its open transaction is left behind. Afterwards, besides everything the chaos checks,
each saga's result is on the results topic exactly once for a read_committed reader, while a
read_uncommitted reader shows the transactions that were aborted instead.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from itinerant.brokers.connection import quiet_client_config
from itinerant.settings import Settings

from .conftest import Broker, System, poll_until, start_system
from .failure_helpers import Raw, RawReader
from .test_chaos import FAULT_RATE, run_chaos
from .test_replicas import FROZEN, PLAN, REPLICAS, database, shared_by

pytestmark = pytest.mark.integration

__all__ = ["database"]  # the fixture, shared with test_replicas


@pytest.fixture(scope="module")
def system(
    broker: Broker, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    if broker.kind != "kafka":
        pytest.skip("exactly-once needs Kafka transactions (Apache Kafka)")
    running = start_system(
        broker,
        tmp_path_factory.mktemp("exactly-once"),
        replicas=REPLICAS,
        state_url=database,
        partitions=4,
        fault_inventory_rate=FAULT_RATE,
        processing_guarantee="exactly_once",
    )
    try:
        yield running
    finally:
        running.supervisor.stop()


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


def test_every_saga_has_one_result_under_chaos(system: System, database: str) -> None:
    del database
    procs = system.supervisor.procs
    for service, count in REPLICAS.items():
        poll_until(
            lambda s=service, c=count: shared_by(system, s, c),
            60,
            f"{count} members of {service}'s group, each with partitions",
        )

    def freeze() -> None:
        pid = procs[FROZEN].pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

    def thaw() -> None:
        pid = procs[FROZEN].pid
        if pid is not None:
            os.kill(pid, signal.SIGCONT)

    states = run_chaos(system, freeze=freeze, thaw=thaw, target=FROZEN, plan=PLAN)

    counts = results_per_saga(system.settings, set(states))
    twice = {saga: n for saga, n in counts.items() if n != 1}
    missing = set(states) - set(counts)
    print(
        f"  exactly-once: {len(counts)} sagas with a result, {len(twice)} with more than one; "
        f"results-topic records incl. aborted and control records: "
        f"{uncommitted_count(system.settings, system.settings.results_topic)}"
    )
    assert not missing, sorted(missing)[:10]
    assert not twice, sorted(twice.items())[:10]
