"""Consumer lag and broker storage gauges (docs/architecture.md#metrics), sampled periodically by
each worker.

``itinerant_consumer_lag_messages{service,topic}``: for every partition of each topic the
service consumes, high watermark minus the consumer group's committed offset (group
``itinerant-<service>``; with nothing committed yet, minus the low watermark, as the group starts
from the earliest offset), summed per topic. It reads the committed offsets with a separate
client that never joins the group, so it counts every partition of the topic, whichever instance
owns it, and it lags the group's commits by up to the commit interval (1 s).

On Apache Kafka the figure is exact (up to the commit interval). On Tansu (the no-Java fallback
broker) it is **approximate**, clamped at 0: there the high watermark is the base offset of the
last record batch plus one, so after a multi-record batch it undercounts and can fall below the
committed offset.

``itinerant_broker_partition_messages{topic,partition}`` (coordinator only): the high watermark
of every partition of every topic, the same figure ``itinerant topics list`` and
:func:`itinerant.brokers.topics.partition_high_watermarks` show (approximate in the same way).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_INVALID, Consumer, TopicPartition

from itinerant.brokers.client_security import quiet_config
from itinerant.observability import metrics
from itinerant.settings import Settings

if TYPE_CHECKING:
    from itinerant.runtime.processor import Processed

log = logging.getLogger(__name__)

#: Seconds between samples (the worker's timer interval).
DEFAULT_INTERVAL_S = 5.0


def partition_lag(high: int, low: int, committed: int) -> int:
    """Messages not yet consumed in one partition: ``high - position``, never negative.

    ``committed`` below 0 means the group has committed nothing; it then starts at ``low``.
    """
    position = committed if committed >= 0 else low
    return max(0, high - position)


@dataclass
class LagMonitor:
    """Samples lag of ``topics`` for ``service``'s group (and broker storage if asked)."""

    service: str
    settings: Settings
    topics: list[str]
    broker_storage: bool = False
    _consumer: Any = field(default=None, repr=False)
    _failing: bool = field(default=False, repr=False)

    @property
    def group(self) -> str:
        return f"itinerant-{self.service}"

    def _client(self) -> Any:
        if self._consumer is None:
            config: dict[str, Any] = quiet_config(self.settings)
            config.update(
                {
                    "group.id": self.group,  # only read (OffsetFetch); this client never joins
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "allow.auto.create.topics": False,
                }
            )
            self._consumer = Consumer(config)
        return self._consumer

    def sample(self) -> dict[str, int]:
        """Set the gauges; return the lag per topic."""
        consumer = self._client()
        timeout = self.settings.broker_timeout_s
        # All topics (never one by name: on Tansu naming a topic in a metadata request creates it)
        metadata = consumer.list_topics(timeout=timeout)
        counts = {name: len(topic.partitions) for name, topic in metadata.topics.items()}
        partitions = [
            TopicPartition(topic, p) for topic in self.topics for p in range(counts.get(topic, 0))
        ]
        committed: dict[tuple[str, int], int] = {}
        if partitions:
            for tp in consumer.committed(partitions, timeout=timeout):
                committed[(tp.topic, tp.partition)] = (
                    tp.offset if tp.error is None else OFFSET_INVALID
                )
        lags = dict.fromkeys(self.topics, 0)
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            lags[tp.topic] += partition_lag(
                int(high), int(low), committed.get((tp.topic, tp.partition), OFFSET_INVALID)
            )
        for topic, lag in lags.items():
            if topic in counts:
                metrics.CONSUMER_LAG.labels(self.service, topic).set(lag)
        if self.broker_storage:
            for topic in self.settings.all_topics():
                for partition in range(counts.get(topic, 0)):
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout, cached=False
                    )
                    metrics.BROKER_PARTITION_MESSAGES.labels(topic, str(partition)).set(int(high))
        return lags

    async def tick(self) -> list[Processed]:
        """A worker ``Timer`` tick: sample in a thread (the client blocks); never raises."""
        try:
            await asyncio.to_thread(self.sample)
        except Exception as exc:
            # One warning per outage, not one per tick; the client is rebuilt next time.
            (log.debug if self._failing else log.warning)(
                "consumer lag of %s not sampled: %s", self.service, exc
            )
            self._failing = True
            self.close()
        else:
            if self._failing:
                log.info("consumer lag of %s sampled again", self.service)
            self._failing = False
        return []

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception as exc:
                log.debug("closing the lag client: %s", exc)
