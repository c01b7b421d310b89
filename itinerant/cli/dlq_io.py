"""The I/O of ``itinerant dlq``: the dead-letter and actions topics read whole, messages
published, and a saga fetched from the coordinator's HTTP view.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from itinerant.brokers.client_security import quiet_config
from itinerant.errors import BrokerUnavailable
from itinerant.operators.dlq_records import ACTIONS_TOPIC, Action, DlqEntry
from itinerant.operators.dlq_view import EntryView, fold
from itinerant.security.tokens import operator_headers
from itinerant.settings import Settings
from itinerant.wire.envelope import InRecord, OutMessage
from itinerant.wire.ids import new_id


def actions_topic(settings: Settings) -> str:
    return settings.topic(ACTIONS_TOPIC)


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    entries: list[DlqEntry]
    actions: list[Action]

    def views(self) -> list[EntryView]:
        return fold(self.entries, self.actions)


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        {
            **quiet_config(settings),
            "group.id": f"itinerant-cli-dlq-{new_id()}",  # required by the client; never joined
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": settings.consumer_fetch_wait_ms,
            "allow.auto.create.topics": False,
            # The end of a partition, as the consumer sees it: with transactions (exactly-once)
            # the last offsets below the high watermark are commit markers, never delivered.
            "enable.partition.eof": True,
        }
    )


def read_snapshot(settings: Settings, *, deadline_s: float | None = None) -> Snapshot:
    """Every record of the dlq and actions topics, read from the start until caught up.

    No consumer group: all partitions are assigned from the beginning. Caught up means every
    partition reached its high watermark, or its end as the consumer reports it (a partition
    written in transactions ends in commit markers), and then a poll came back empty (the
    embedded broker's watermark can point inside the last batch). Raises
    :class:`BrokerUnavailable` if Kafka does not answer, or if the topics cannot be read to the
    end before the deadline.
    """
    deadline_s = deadline_s if deadline_s is not None else max(15.0, settings.broker_timeout_s * 4)
    dlq_topic, actions = settings.dlq_topic, actions_topic(settings)
    consumer = _consumer(settings)
    try:
        try:
            metadata = consumer.list_topics(timeout=settings.broker_timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"no Kafka broker answered at {settings.kafka_bootstrap_servers} within "
                f"{settings.broker_timeout_s:g}s ({exc}); start it with `itinerant up` or point "
                "KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
            ) from exc
        if dlq_topic not in metadata.topics:
            raise BrokerUnavailable(
                f"topic {dlq_topic} does not exist at {settings.kafka_bootstrap_servers}; "
                "run `itinerant topics create` (or `itinerant up`)"
            )
        topics = [t for t in (dlq_topic, actions) if t in metadata.topics]
        remaining: dict[tuple[str, int], int] = {}  # partition -> high watermark to reach
        assignment = []
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=settings.broker_timeout_s
                )
                if high > max(low, 0):
                    remaining[(topic, partition)] = int(high)
                assignment.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
        entries: list[DlqEntry] = []
        acts: list[Action] = []
        if not remaining:
            return Snapshot(entries, acts)
        consumer.assign(assignment)
        deadline = time.monotonic() + deadline_s
        while True:
            message = consumer.poll(0.3 if not remaining else 0.5)
            if message is None:
                if not remaining:
                    return Snapshot(entries, acts)
            elif message.error() is not None:
                if message.error().code() == KafkaError._PARTITION_EOF:
                    remaining.pop((message.topic(), message.partition()), None)
            else:
                where = (message.topic(), message.partition())
                if where in remaining and message.offset() + 1 >= remaining[where]:
                    del remaining[where]
                if message.topic() == dlq_topic:
                    entries.append(DlqEntry.from_record(_record(message)))
                else:
                    action = Action.from_json(message.value())
                    if action is not None:
                        acts.append(action)
            if time.monotonic() > deadline:
                behind = ", ".join(f"{t}[{p}]" for t, p in sorted(remaining)) or "the last poll"
                raise BrokerUnavailable(
                    f"could not read {dlq_topic} to its end within {deadline_s:.0f}s (still "
                    f"waiting on {behind}); is the broker overloaded? try again"
                )
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} failed while reading: {exc}"
        ) from exc
    finally:
        consumer.close()


def read_original(
    settings: Settings, topic: str, partition: int, offset: int, *, deadline_s: float = 10.0
) -> InRecord | None:
    """The record at ``topic[partition]@offset``, or None when the topic no longer holds it
    (past its retention, or the topic is gone). Raises :class:`BrokerUnavailable` if Kafka does
    not answer."""
    consumer = _consumer(settings)
    try:
        try:
            metadata = consumer.list_topics(timeout=settings.broker_timeout_s)
            if topic not in metadata.topics:
                return None
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=settings.broker_timeout_s
            )
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"Kafka at {settings.kafka_bootstrap_servers} did not answer for {topic}: {exc}"
            ) from exc
        if not low <= offset < high:
            return None
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            if message.offset() == offset:
                return _record(message)
            if message.offset() > offset:  # compacted or deleted in the meantime
                return None
        raise BrokerUnavailable(
            f"could not read {topic}[{partition}]@{offset} within {deadline_s:.0f}s; try again"
        )
    finally:
        consumer.close()


def _record(message: Any) -> InRecord:
    return InRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        headers=list(message.headers() or []),
    )


# --- writing ----------------------------------------------------------------------------------


def publish(settings: Settings, messages: Sequence[OutMessage]) -> list[str | None]:
    """Produce ``messages`` in order; per message None if Kafka took it, else the error."""
    producer = Producer(
        {
            **quiet_config(settings),
            "message.timeout.ms": int(settings.broker_timeout_s * 2000),
            "enable.idempotence": False,
            # a replay re-sends an original as large as its topic took, not only ours
            "message.max.bytes": settings.topic_max_message_bytes,
        }
    )
    outcome: list[str | None] = ["timed out"] * len(messages)

    def report(index: int) -> Any:
        def done(error: Any, _message: Any) -> None:
            outcome[index] = None if error is None else str(error)

        return done

    for index, message in enumerate(messages):
        producer.produce(
            message.topic,
            value=message.value,
            key=message.key,
            headers=message.headers,
            on_delivery=report(index),
        )
        producer.poll(0)
    producer.flush(settings.broker_timeout_s * 2)
    return outcome


# --- the coordinator's saga view --------------------------------------------------------------


def fetch_saga(settings: Settings, saga_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The saga from the coordinator's HTTP view, or (None, why not)."""
    # The id comes from a message: quoted, so that no header can bend the request.
    url = f"http://127.0.0.1:{settings.coordinator_http_port}/sagas/{quote(saga_id, safe='')}"
    request = urllib.request.Request(url, headers=operator_headers(settings))
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read()), None
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None, f"the coordinator does not know saga {saga_id}"
        return None, f"the coordinator answered {exc.code} at {url}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return None, f"the coordinator's saga view at {url} does not answer ({exc})"
