"""Which broker `itinerant up` runs, and starting it: the embedded Apache Kafka by default, Tansu
where Java cannot be had, none for an external cluster (docs/brokers.md)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from itinerant.brokers.broker_security import BrokerSecurity
from itinerant.brokers.connection import parse_bootstrap
from itinerant.brokers.kafka import KafkaNode, KafkaUnavailable, kafka_available, kafka_home
from itinerant.brokers.tansu import TansuBroker
from itinerant.settings import Settings

log = logging.getLogger(__name__)


class RunningBroker(Protocol):
    @property
    def bootstrap(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def stop(self) -> int | None: ...


def resolve_broker(settings: Settings) -> tuple[Settings, str | None]:
    """``settings`` with the broker that can run here, and a warning when it is not the one asked.

    The default (``kafka``, not set by the user) falls back to Tansu when Kafka's jars or a Java
    17 are missing, and says so; ``ITINERANT_BROKER=kafka`` set explicitly raises instead.
    """
    if settings.broker != "kafka":
        return settings, None
    why = kafka_available(kafka_home(settings.kafka_home))
    if why is None:
        return settings, None
    if "broker" in settings.model_fields_set:
        raise KafkaUnavailable(why)
    warning = (
        f"Apache Kafka cannot run here ({why}); using the Tansu development broker instead "
        "(memory only: nothing survives `itinerant down`). Set ITINERANT_BROKER=tansu to "
        "silence this."
    )
    return settings.model_copy(update={"broker": "tansu"}), warning


def kafka_storage(settings: Settings) -> Path:
    return settings.data_dir / "kafka"


def start_embedded(
    settings: Settings, log_dir: Path, *, die_with_parent: bool = False
) -> RunningBroker:
    """Start the broker ``settings.broker`` names on KAFKA_BOOTSTRAP_SERVERS' host and port;
    ``die_with_parent``: it stops when this process dies (`itinerant up`)."""
    host, port = parse_bootstrap(settings.kafka_bootstrap_servers)
    log_path = log_dir / "broker.log"
    if settings.broker == "tansu":
        tansu = TansuBroker(host, port, die_with_parent=die_with_parent)
        tansu.start(log_path)
        return tansu
    security = None
    if settings.embedded_kafka_security == "sasl_ssl":
        from itinerant.brokers.secure_mesh import broker_principals

        security = BrokerSecurity.for_settings(settings, host)
        security.ensure(broker_principals(settings))
    node = KafkaNode(
        storage=kafka_storage(settings),
        host=host,
        port=port,
        heap_mb=settings.kafka_heap_mb,
        home=kafka_home(settings.kafka_home),
        security=security,
        die_with_parent=die_with_parent,
    )
    node.start(log_path)
    return node
