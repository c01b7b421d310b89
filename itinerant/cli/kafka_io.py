"""Kafka I/O for the CLI: publish requests, follow results and events (no consumer group)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from itinerant.brokers.client_security import quiet_config
from itinerant.errors import BrokerUnavailable
from itinerant.security.signing import mesh_keys
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope
from itinerant.wire.ids import new_id
from itinerant.wire.request import Request


def publish_request(
    settings: Settings,
    request: Request,
    *,
    source: str = "/clients/cli",
    principal: str | None = None,
) -> str:
    """Publish a request with CloudEvents headers, signed as ``principal`` when given (the
    saga then acts for that customer; unsigned it is anonymous); returns its saga id."""
    saga_id = request.request_id or new_id()
    request = request.model_copy(update={"request_id": saga_id})
    envelope = Envelope(
        id=new_id(),
        type="itinerant.request.v1",
        source=f"/clients/{principal}" if principal else source,
        saga_id=saga_id,
        data=request.model_dump_json(exclude_none=True).encode(),
    )
    message = envelope.to_message(settings.requests_topic)
    if principal:
        message = mesh_keys(settings).sign(message, principal)
    publish_raw(settings, message.topic, message.key, message.value, message.headers)
    return saga_id


def publish_raw(
    settings: Settings,
    topic: str,
    key: bytes | None,
    value: bytes,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    producer = Producer(
        {
            **quiet_config(settings),
            "message.timeout.ms": int(settings.broker_timeout_s * 2000),
        }
    )
    errors: list[str] = []

    def report(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(topic, value=value, key=key, headers=headers or [], on_delivery=report)
    remaining = producer.flush(settings.broker_timeout_s * 2)
    if remaining or errors:
        raise BrokerUnavailable(
            f"Kafka at {settings.kafka_bootstrap_servers} did not take the message: "
            f"{errors[0] if errors else 'timed out'}"
        )


@dataclass(frozen=True)
class Seen:
    topic: str
    key: str | None
    value: dict[str, Any] | None
    headers: dict[str, str]
    offset: int


def follow(
    settings: Settings, topics: list[str], *, from_beginning: bool = True, poll_s: float = 0.1
) -> Iterator[Seen | None]:
    """Yield every record of ``topics`` (``None`` on each idle poll, so callers can time out)."""
    consumer = Consumer(
        {
            **quiet_config(settings),
            "group.id": f"itinerant-cli-{new_id()}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": settings.consumer_fetch_wait_ms,
            "allow.auto.create.topics": False,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=settings.broker_timeout_s)
        assignment = []
        for topic in topics:
            if topic not in metadata.topics:
                raise BrokerUnavailable(
                    f"topic {topic} does not exist; run `itinerant topics create`"
                )
            for partition in metadata.topics[topic].partitions:
                offset = 0
                if not from_beginning:
                    _low, offset = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=settings.broker_timeout_s
                    )
                assignment.append(TopicPartition(topic, partition, offset))
        consumer.assign(assignment)
        while True:
            message = consumer.poll(poll_s)
            if message is None or message.error():
                yield None
                continue
            yield _seen(message)
    finally:
        consumer.close()


def _seen(message: Any) -> Seen:
    raw = message.value()
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        value = None
    key = message.key()
    return Seen(
        topic=message.topic(),
        key=key.decode(errors="replace") if key else None,
        value=value if isinstance(value, dict) else None,
        headers={k: v.decode(errors="replace") for k, v in (message.headers() or [])},
        offset=message.offset(),
    )


def wait_for_results(
    settings: Settings, saga_ids: set[str], timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Results of ``saga_ids`` from the results topic, as they arrive, until all or timeout."""
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    for seen in follow(settings, [settings.results_topic]):
        if seen is not None and seen.key in saga_ids and seen.value is not None:
            found[seen.key] = seen.value
        if len(found) == len(saga_ids) or time.monotonic() > deadline:
            return found
    return found


def publish_many(settings: Settings, requests: list[Request]) -> dict[str, float]:
    """Publish requests through one producer; returns saga id -> time sent (epoch seconds)."""
    producer = Producer(
        {
            **quiet_config(settings),
            "linger.ms": 5,
        }
    )
    sent: dict[str, float] = {}
    for request in requests:
        saga_id = request.request_id or new_id()
        body = request.model_copy(update={"request_id": saga_id})
        envelope = Envelope(
            id=new_id(),
            type="itinerant.request.v1",
            source="/clients/cli",
            saga_id=saga_id,
            data=body.model_dump_json(exclude_none=True).encode(),
        )
        sent[saga_id] = time.time()
        producer.produce(
            settings.requests_topic,
            value=envelope.data,
            key=saga_id.encode(),
            headers=envelope.headers(),
        )
        producer.poll(0)
    if producer.flush(settings.broker_timeout_s * 2):
        raise BrokerUnavailable("Kafka did not take every request; is the broker up?")
    return sent
