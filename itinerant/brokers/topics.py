"""Topic administration: explicit, idempotent creation, checks at worker start, storage watch.

Never rely on auto-creation (docs/brokers.md). Note that on Tansu a metadata request *naming* a
topic creates it (with 4 partitions), so everything here lists all topics instead of asking
for one by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from itinerant.brokers.client_security import quiet_config
from itinerant.errors import BrokerUnavailable, NonRetryableError
from itinerant.settings import Settings

#: Stored batches per partition at which the embedded broker's consumers get nothing more.
TANSU_STALL_BATCHES = 20_000
DEFAULT_WARN_AT = 8_000


class TopicAdminError(NonRetryableError):
    """A topic operation failed for a reason other than an unreachable broker."""

    reason = "topic_admin_error"


class TopicPartitionMismatch(TopicAdminError):
    """A topic exists with another partition count than ITINERANT_PARTITIONS."""

    reason = "topic_partition_mismatch"
    hint = (
        "delete those topics (`itinerant topics delete`, or your Kafka's tools) and create them "
        "again with `itinerant topics create`, or set ITINERANT_PARTITIONS to match"
    )


class MissingTopics(TopicAdminError):
    """Topics a worker needs do not exist."""

    reason = "missing_topics"
    hint = "create them with `itinerant topics create` (`itinerant up` does it too)"


def _admin(settings: Settings) -> AdminClient:
    return AdminClient(quiet_config(settings))


def _unreachable(settings: Settings, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"no Kafka broker answered at {settings.kafka_bootstrap_servers} within "
        f"{settings.broker_timeout_s:g}s ({exc}); start it with `itinerant up` or point "
        "KAFKA_BOOTSTRAP_SERVERS at a running Kafka"
    )


def _metadata(admin: AdminClient, settings: Settings) -> ClusterMetadata:
    """Metadata of all topics (never of one by name: that would auto-create it on Tansu)."""
    try:
        return admin.list_topics(timeout=settings.broker_timeout_s)
    except KafkaException as exc:
        raise _unreachable(settings, exc) from exc


def _partition_counts(metadata: ClusterMetadata) -> dict[str, int]:
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def _kafka_error(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error: KafkaError = exc.args[0]
        return error
    return None


def _mismatch_error(mismatched: dict[str, int], expected: int) -> TopicPartitionMismatch:
    listing = ", ".join(f"{name} has {count}" for name, count in sorted(mismatched.items()))
    return TopicPartitionMismatch(
        f"topics exist with a partition count other than ITINERANT_PARTITIONS={expected}: "
        f"{listing}; delete them and create them again (`itinerant topics delete` then "
        "`itinerant topics create`; their messages are lost), or set ITINERANT_PARTITIONS to "
        "match"
    )


def topic_config(settings: Settings) -> dict[str, str]:
    """Explicit configs of the topics we create (none on Tansu, which ignores them)."""
    if settings.broker == "tansu":
        return {}
    if settings.topic_min_insync_replicas > settings.replication_factor:
        raise TopicAdminError(
            f"min.insync.replicas {settings.topic_min_insync_replicas} is more than the "
            f"replication factor {settings.replication_factor}: no write could ever succeed",
            hint="lower ITINERANT_MIN_INSYNC_REPLICAS or raise ITINERANT_REPLICATION_FACTOR",
        )
    return {
        "retention.ms": str(settings.topic_retention_ms),
        "min.insync.replicas": str(settings.topic_min_insync_replicas),
        "cleanup.policy": "delete",
        "max.message.bytes": str(settings.topic_max_message_bytes),
    }


def ensure_topics(settings: Settings, topics: list[str] | None = None) -> list[str]:
    """Create every missing topic of ``topics`` (default: ``settings.all_topics()``).

    Each gets ``settings.partitions`` partitions and ``settings.replication_factor``. Idempotent:
    returns the names it created (empty when all existed). Raises
    :class:`TopicPartitionMismatch` (creating nothing) if one exists with another partition
    count, and :class:`BrokerUnavailable` if Kafka does not answer.
    """
    wanted = list(dict.fromkeys(topics if topics is not None else settings.all_topics()))
    admin = _admin(settings)
    existing = _partition_counts(_metadata(admin, settings))
    mismatched = {
        name: existing[name]
        for name in wanted
        if name in existing and existing[name] != settings.partitions
    }
    if mismatched:
        raise _mismatch_error(mismatched, settings.partitions)
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return []

    new_topics = [
        NewTopic(
            name,
            num_partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config=topic_config(settings),
        )
        for name in missing
    ]
    futures = admin.create_topics(
        new_topics,
        operation_timeout=settings.broker_timeout_s,
        request_timeout=settings.broker_timeout_s,
    )
    created: list[str] = []
    raced: list[str] = []
    failures: list[str] = []
    for name in missing:
        try:
            futures[name].result(timeout=settings.broker_timeout_s)
        except KafkaException as exc:
            error = _kafka_error(exc)
            if error is not None and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                raced.append(name)  # someone else created it meanwhile
            elif error is not None and error.code() in (
                KafkaError._TRANSPORT,
                KafkaError._TIMED_OUT,
                KafkaError._ALL_BROKERS_DOWN,
            ):
                raise _unreachable(settings, exc) from exc
            else:
                failures.append(f"{name}: {error.str() if error is not None else exc}")
        except TimeoutError as exc:
            raise _unreachable(settings, exc) from exc
        else:
            created.append(name)
    if failures:
        raise TopicAdminError(
            f"could not create topics: {'; '.join(failures)}", hint="check the broker's log"
        )
    if raced:
        counts = _partition_counts(_metadata(admin, settings))
        mismatched = {
            name: counts[name]
            for name in raced
            if name in counts and counts[name] != settings.partitions
        }
        if mismatched:
            raise _mismatch_error(mismatched, settings.partitions)
    return created


def check_topics(settings: Settings, topics: list[str] | None = None) -> None:
    """Raise :class:`MissingTopics` naming every topic of ``topics`` that does not exist.

    ``topics`` defaults to ``settings.all_topics()``. Used at worker start; it never creates
    anything. Raises :class:`BrokerUnavailable` if Kafka does not answer.
    """
    wanted = list(dict.fromkeys(topics if topics is not None else settings.all_topics()))
    existing = _partition_counts(_metadata(_admin(settings), settings))
    missing = [name for name in wanted if name not in existing]
    if missing:
        raise MissingTopics(
            f"missing Kafka topics at {settings.kafka_bootstrap_servers}: {', '.join(missing)}; "
            "create them with `itinerant topics create` (or start everything with `itinerant up`)"
        )


def partition_high_watermarks(
    settings: Settings, topics: list[str] | None = None
) -> dict[tuple[str, int], int]:
    """High watermark (≈ messages stored) of every partition of ``topics`` that exist.

    ``topics`` defaults to ``settings.all_topics()``; topics that do not exist are left out.
    Uses a consumer without joining a group. On Tansu 0.6 the figures are **approximate**: its
    ListOffsets answers the base offset of the last record batch plus one, so the latest
    multi-record batch is counted as one message. Good enough to watch growth; do not build
    recovery on it.
    """
    wanted = list(dict.fromkeys(topics if topics is not None else settings.all_topics()))
    counts = _partition_counts(_metadata(_admin(settings), settings))
    config: dict[str, Any] = quiet_config(settings)
    config.update(
        {
            "group.id": "itinerant-watermarks",  # required by the client; never joined
            "enable.auto.commit": False,
            "allow.auto.create.topics": False,
        }
    )
    consumer = Consumer(config)
    result: dict[tuple[str, int], int] = {}
    try:
        for name in wanted:
            for partition in range(counts.get(name, 0)):
                try:
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(name, partition),
                        timeout=settings.broker_timeout_s,
                        cached=False,
                    )
                except KafkaException as exc:
                    raise _unreachable(settings, exc) from exc
                result[(name, partition)] = int(high)
    finally:
        consumer.close()
    return result


def storage_warnings(
    watermarks: dict[tuple[str, int], int], warn_at: int = DEFAULT_WARN_AT
) -> list[str]:
    """One warning per partition holding ``warn_at`` or more messages, fullest first.

    The embedded broker (Tansu, memory engine) never deletes anything, and every fetch lists
    all batches stored in the partition: it slows down and then stalls near 20,000 batches.
    Messages are at least batches, so warning on messages errs on the early side.
    """
    full = [(key, count) for key, count in watermarks.items() if count >= warn_at]
    full.sort(key=lambda item: (-item[1], item[0]))
    return [
        f"{topic}[{partition}] stores about {count:,} messages (warning at {warn_at:,}): the "
        "Tansu broker keeps every message, slows down as a partition fills and stalls near "
        f"{TANSU_STALL_BATCHES:,} batches; restart it with `itinerant down && itinerant up` "
        "(which empties it), or use Apache Kafka (ITINERANT_BROKER=kafka, the default)"
        for (topic, partition), count in full
    ]


def delete_topics(settings: Settings, topics: Iterable[str]) -> list[str]:
    """Delete ``topics``; return the names deleted (topics that did not exist are skipped)."""
    names = list(dict.fromkeys(topics))
    if not names:
        return []
    admin = _admin(settings)
    _metadata(admin, settings)  # fail fast and clearly if Kafka is not there
    futures = admin.delete_topics(
        names,
        operation_timeout=settings.broker_timeout_s,
        request_timeout=settings.broker_timeout_s,
    )
    deleted: list[str] = []
    failures: list[str] = []
    for name in names:
        try:
            futures[name].result(timeout=settings.broker_timeout_s)
        except KafkaException as exc:
            error = _kafka_error(exc)
            if error is not None and error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue
            failures.append(f"{name}: {error.str() if error is not None else exc}")
        except TimeoutError as exc:
            raise _unreachable(settings, exc) from exc
        else:
            deleted.append(name)
    if failures:
        raise TopicAdminError(
            f"could not delete topics: {'; '.join(failures)}", hint="check the broker's log"
        )
    return deleted
