"""The gateway's one consumer of the mesh (docs/security-gateway.md#streams): it reads the
results topic from its beginning (saga id -> latest result, for tasks/get) and the saga events
topic from its end, and wakes every stream subscribed to a saga when a record of that saga
arrives. Streams wait on their own asyncio queue; nothing polls the coordinator's view on a
clock.

Results are final facts written once by the coordinator (a repeat after a crash carries the
same content), so remembering them is not a copy of state that can drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

from itinerant.brokers.client_security import quiet_config
from itinerant.errors import BrokerUnavailable
from itinerant.settings import Settings
from itinerant.wire.ids import new_id

log = logging.getLogger(__name__)

RESULTS_KEPT = 10_000
RESULT = "result"
EVENT = "event"


class Subscription:
    """Wake-ups for one stream of one saga: a queue of one (wake-ups that arrive while the
    stream is busy merge into one)."""

    def __init__(self, feed: MeshFeed, saga_id: str) -> None:
        self.feed = feed
        self.saga_id = saga_id
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)

    def notify(self, kind: str) -> None:
        """From the consumer thread."""
        self.loop.call_soon_threadsafe(self._put, kind)

    def _put(self, kind: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(kind)

    async def next(self, timeout_s: float) -> str | None:
        """The kind of record that woke this stream, or None after ``timeout_s``."""
        try:
            return await asyncio.wait_for(self.queue.get(), max(timeout_s, 0.0))
        except TimeoutError:
            return None

    def close(self) -> None:
        self.feed.unsubscribe(self)


class MeshFeed:
    """One consumer thread (no consumer group) of the results and saga events topics."""

    def __init__(self, settings: Settings, kept: int = RESULTS_KEPT) -> None:
        self.settings = settings
        self.kept = kept
        self._results: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._subscribers: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-feed", daemon=True)
        self.assigned = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.settings.broker_timeout_s + 2)

    def get(self, saga_id: str) -> dict[str, Any] | None:
        with self._lock:
            return self._results.get(saga_id)

    @contextlib.contextmanager
    def subscribe(self, saga_id: str) -> Iterator[Subscription]:
        """Wake-ups for ``saga_id`` while the block runs (call from the event loop)."""
        subscription = Subscription(self, saga_id)
        with self._lock:
            self._subscribers.setdefault(saga_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscription.close()

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            found = self._subscribers.get(subscription.saga_id)
            if found is not None:
                found.discard(subscription)
                if not found:
                    del self._subscribers[subscription.saga_id]

    def subscribers(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subscribers.values())

    async def wait(self, saga_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The result of ``saga_id``, waiting up to ``timeout_s`` for it to arrive."""
        deadline = time.monotonic() + timeout_s
        with self.subscribe(saga_id) as wake:
            while True:
                found = self.get(saga_id)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                await wake.next(left)

    # -- the consumer thread ---------------------------------------------------------------------

    def publish(self, topic: str, key: str, value: dict[str, Any] | None) -> None:
        """Take one record (what the consumer thread does; tests may call it too)."""
        kind = RESULT if topic == self.settings.results_topic else EVENT
        with self._lock:
            if kind == RESULT and value is not None:
                self._results[key] = value
                self._results.move_to_end(key)
                while len(self._results) > self.kept:
                    self._results.popitem(last=False)
            waiting = list(self._subscribers.get(key, ()))
        for subscription in waiting:
            subscription.notify(kind)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for seen in self._records():
                    self.assigned.set()
                    if self._stop.is_set():
                        return
                    if seen is not None:
                        self.publish(*seen)
            except Exception as exc:  # the broker may be away; keep trying until stopped
                log.warning("following the mesh's topics failed (%s); retrying", exc)
                self._stop.wait(2.0)

    def _records(
        self, poll_s: float = 0.1
    ) -> Iterator[tuple[str, str, dict[str, Any] | None] | None]:
        """(topic, saga id, JSON object or None) for each keyed record: the results topic from
        its beginning, the events topic from its end; None on an idle poll."""
        settings = self.settings
        consumer = Consumer(
            {
                **quiet_config(settings),
                "group.id": f"itinerant-gateway-{new_id()}",  # required by the client; never joined
                "enable.auto.commit": False,
                "fetch.wait.max.ms": settings.consumer_fetch_wait_ms,
                "allow.auto.create.topics": False,
            }
        )
        try:
            # All topics, not these by name: on Tansu naming a topic would create it.
            metadata = consumer.list_topics(timeout=settings.broker_timeout_s)
            assignment: list[TopicPartition] = []
            for topic, start in (
                (settings.results_topic, OFFSET_BEGINNING),
                (settings.events_topic, OFFSET_END),
            ):
                if topic not in metadata.topics:
                    raise BrokerUnavailable(
                        f"topic {topic} does not exist; run `itinerant topics create`"
                    )
                partitions = metadata.topics[topic].partitions
                assignment += [TopicPartition(topic, p, start) for p in partitions]
            consumer.assign(assignment)
            while True:
                message = consumer.poll(poll_s)
                if message is None or message.error() or not message.key():
                    yield None
                    continue
                key = message.key().decode(errors="replace")
                yield message.topic(), key, _json_object(message.value())
        finally:
            consumer.close()


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
