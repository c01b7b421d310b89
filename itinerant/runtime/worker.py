"""One service process: a Faust app whose agents each consume one topic with ``concurrency=1``,
hand every record to a handler that turns it into outputs (or, when handling keeps raising, into
its dead letter), send the outputs until Kafka took them, and only then let Faust acknowledge
the record (runtime/delivery.py). Offsets are therefore committed after the outputs are
acknowledged by Kafka, and a crash at any point is repaired by the inbox on redelivery."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust

from itinerant.brokers.client_security import faust_credentials
from itinerant.brokers.topics import check_topics
from itinerant.observability import lag, logs, metrics, tracing
from itinerant.runtime import dlq, positions
from itinerant.runtime.delivery import deliver_until_done, handle_or_dead_letter
from itinerant.runtime.faust_transport import app_class, broker_url
from itinerant.runtime.grouping import GroupQueue
from itinerant.runtime.housekeeping import HOUSEKEEPING_INTERVAL_S, Housekeeping
from itinerant.runtime.processor import Processed
from itinerant.runtime.producer import AsyncProducer
from itinerant.runtime.store import STORE_ERRORS, StateStore
from itinerant.runtime.transactional_flush import TransactionalFlusher
from itinerant.runtime.transactions import TransactionalProducer
from itinerant.settings import Settings, replica_name
from itinerant.wire.envelope import InRecord, OutMessage

log = logging.getLogger(__name__)

RecordHandler = Callable[[InRecord], Awaitable[Processed]]
Periodic = Callable[[], Awaitable[list[Processed]]]


@dataclass
class Subscription:
    topic: str
    handle: RecordHandler
    store: StateStore | None = None  # the handler's state store, when not the worker's own


@dataclass
class Timer:
    interval_s: float
    tick: Periodic


@dataclass
class Worker:
    service: str
    settings: Settings
    store: StateStore
    subscriptions: list[Subscription]
    timers: list[Timer] = field(default_factory=list)
    startup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _producer: AsyncProducer | None = None
    _flushers: list[TransactionalFlusher] = field(default_factory=list)
    _transactional_producers: list[TransactionalProducer] = field(default_factory=list)

    @property
    def producer(self) -> AsyncProducer:
        if self._producer is None:
            self._producer = AsyncProducer(self.settings, client_id=f"itinerant-{self.service}")
        return self._producer

    @property
    def stores(self) -> list[StateStore]:
        found = [self.store]
        for subscription in self.subscriptions:
            if subscription.store is not None and subscription.store not in found:
                found.append(subscription.store)
        return found

    async def deliver(self, *batch: Processed, store: StateStore | None = None) -> None:
        """Send the outputs of handled records: every progress event first, awaited until Kafka
        acknowledged them all, then every other output, likewise; then mark them sent. The
        coordinator thus learns of a step before any message it caused reaches the next step."""
        outputs = [m for processed in batch for m in processed.outputs]
        events = [m for m in outputs if m.topic == self.settings.events_topic]
        rest = [m for m in outputs if m.topic != self.settings.events_topic]
        if events:
            await self.producer.send_all(events, refused=self._refused)
        if rest:
            await self.producer.send_all(rest, refused=self._refused)
        try:
            (store or self.store).mark_sent_soon(
                [seq for processed in batch for seq in processed.outbox_seqs]
            )
        except STORE_ERRORS as exc:  # delivered all the same: the marks are applied later
            log.warning("could not mark outputs sent yet (%s); will retry", exc)

    async def deliver_until_done(
        self, batch: list[Processed], store: StateStore | None = None
    ) -> None:
        """:meth:`deliver`, again until the broker took it all (runtime/delivery.py)."""

        async def once(group: Sequence[Processed]) -> None:
            await self.deliver(*group, store=store)

        await deliver_until_done(once, batch, service=self.service, settings=self.settings)

    def outbox_leftovers(self) -> list[tuple[StateStore, list[tuple[int, OutMessage]]]]:
        """What the last run left unsent, read before this run consumes anything."""
        return [(store, store.unsent()) for store in self.stores]

    async def flush_outbox(
        self, leftovers: list[tuple[StateStore, list[tuple[int, OutMessage]]]]
    ) -> None:
        """Send what a crash left in the outbox (outputs recorded but not acknowledged). Only
        those: an output this run recorded is its flusher's to send, and sending it here too,
        before that flusher marks it sent, would put a second copy on the topic."""
        for store, unsent in leftovers:
            if unsent:
                log.info("resending %d output(s) left unsent by the last run", len(unsent))
                batch = [Processed("recovered", [m], [seq]) for seq, m in unsent]
                await self.deliver_until_done(batch, store)
                store.mark_sent([seq for seq, _ in unsent])

    def _refused(self, message: OutMessage, why: str) -> OutMessage | None:
        """Kafka refused ``message`` as too large, which no retry changes: send a smaller
        dead letter instead, so the outbox never sticks
        (docs/architecture.md#oversized-dead-letters)."""
        instead = dlq.shrink(message, why, dlq_topic=self.settings.dlq_topic, service=self.service)
        origin = (message.header(dlq.ORIGIN_TOPIC) or message.topic.encode()).decode(
            errors="replace"
        )
        where = (
            f"{origin}[{(message.header(dlq.ORIGIN_PARTITION) or b'?').decode(errors='replace')}]"
            f"@{(message.header(dlq.ORIGIN_OFFSET) or b'?').decode(errors='replace')}"
        )
        if instead is None:
            log.error("%s; nothing smaller to send, given up (the original is at %s)", why, where)
        else:
            log.error(
                "%s; sending a %d-byte copy without it instead (%s)",
                why,
                dlq.message_bytes(instead),
                where,
            )
        return instead

    def build_app(self) -> faust.App:
        settings = self.settings
        session_s = settings.consumer_session_timeout_s
        app = app_class(settings.consumer_fetch_wait_ms, settings.transactional)(
            f"itinerant-{self.service}",
            broker=broker_url(settings.kafka_bootstrap_servers),
            broker_credentials=faust_credentials(settings),
            store="memory://",
            web_enabled=False,
            topic_disable_leader=True,
            topic_allow_declare=False,
            topic_partitions=settings.partitions,
            # No Faust tables here (state is in the store), so no standbys. With Faust's default
            # of one, its sticky assignor only trims a member above ceil(P/N) partitions and a
            # rejoined replica can stay idle (docs/operations.md, "Replicas").
            table_standby_replicas=0,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=session_s,
            broker_heartbeat_interval=max(session_s / 6, 0.5),
            broker_rebalance_timeout=max(session_s * 2, 10),
            broker_commit_interval=1.0,
            # On shutdown or rebalance, hand unfinished records back instead of waiting for
            # them: only acknowledged records are committed, and the inbox makes redelivery safe.
            stream_wait_empty=False,
            producer_linger=settings.producer_linger_ms / 1000,
            worker_redirect_stdouts=False,
        )
        for subscription in self.subscriptions:
            self._add_agent(app, subscription)
        for index, timer in enumerate(self.timers):
            self._add_timer(app, timer, f"{self.service}.timer{index}")
        lag_monitor = lag.LagMonitor(
            self.service,
            settings,
            [s.topic for s in self.subscriptions],
            broker_storage=self.service == "coordinator",
        )
        self._add_timer(app, Timer(lag.DEFAULT_INTERVAL_S, lag_monitor.tick), f"{self.service}.lag")
        keeping = Housekeeping(self.service, self.stores, settings)
        self._add_timer(app, Timer(HOUSEKEEPING_INTERVAL_S, keeping.tick), f"{self.service}.keep")

        leftovers = self.outbox_leftovers()

        @app.task  # type: ignore[untyped-decorator]
        async def _recover() -> None:
            await asyncio.to_thread(self.producer.warm, settings.broker_timeout_s)
            for hook in self.startup:
                await hook()
            await self.flush_outbox(leftovers)

        @app.on_partitions_revoked.connect  # type: ignore[untyped-decorator]
        async def _settle(sender: Any, *_: Any, **__: Any) -> None:
            # Partitions are handed over only after the transactions being committed are decided.
            for flusher in self._flushers:
                await flusher.settle()

        @app.on_rebalance_complete.connect  # type: ignore[untyped-decorator]
        async def _ready(sender: Any, **_: Any) -> None:
            self.ready_file().write_text(str(time.time()))

        return app

    def ready_file(self) -> Path:
        instance = replica_name(self.service, self.settings.replica)
        path = self.settings.data_dir / "run" / f"{instance}.ready"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _add_agent(self, app: faust.App, subscription: Subscription) -> None:
        topic = app.topic(subscription.topic, key_serializer="raw", value_serializer="raw")
        name = f"{self.service}.{subscription.topic}"

        async def consume(stream: Any) -> None:
            # Group commit: records are handled one at a time and queued; one flusher sends what
            # is queued (events, then the rest), marks it sent and only then acknowledges those
            # records, so no offset is committed before its outputs are acknowledged. An idle
            # stream sends at once, a busy one batches while a send is out, no timer wakes.
            # Exactly-once: the same, but each group is one Kafka transaction with its offsets
            # (runtime/transactional_flush.py).
            stream.enable_acks = False
            store = subscription.store or self.store
            transactional = self.settings.transactional
            outbox: _Flusher | None = None
            exactly: TransactionalFlusher | None = None
            if transactional:
                exactly = self._transactional_flusher(app, stream, subscription.topic)
            else:
                outbox = _Flusher(self, stream, store, self.settings.batch_max)
            try:
                async for event in stream.events():
                    generation = exactly.generation() if exactly is not None else -1
                    try:
                        store.mark_sent_pending()
                    except STORE_ERRORS as exc:  # bookkeeping only: tried again next record
                        log.warning("could not mark outputs sent yet (%s); will retry", exc)
                    record = _record(event.message)
                    positions.CURRENT.set(
                        positions.Position(
                            record.topic, record.partition, record.offset, transactional
                        )
                    )
                    processed = await handle_or_dead_letter(
                        subscription.handle, record, service=self.service, settings=self.settings
                    )  # never raises: handled, or dead-lettered as it came
                    if exactly is not None:
                        await exactly.add(event, processed, generation)
                    elif outbox is not None:
                        await outbox.add(event, processed)
            finally:
                positions.CURRENT.set(None)
                for flusher in (outbox, exactly):
                    if flusher is not None:
                        flusher.close()

        app.agent(topic, name=name, concurrency=1)(consume)

    def _transactional_flusher(
        self, app: faust.App, stream: Any, topic: str
    ) -> TransactionalFlusher:
        instance = replica_name(self.service, self.settings.replica)
        producer = TransactionalProducer(
            self.settings, f"itinerant-{instance}-{topic}", refused=self._refused
        )
        self._transactional_producers.append(producer)
        flusher = TransactionalFlusher(
            consumer=app.consumer,
            stream=stream,
            producer=producer,
            settings=self.settings,
            service=self.service,
        )
        self._flushers.append(flusher)
        return flusher

    def _add_timer(self, app: faust.App, timer: Timer, name: str) -> None:
        async def tick() -> None:
            try:
                done = await timer.tick()
            except Exception:  # its state is unchanged: the next tick tries again
                log.exception("timer of %s failed", self.service)
                return
            await self.deliver_until_done(done)

        app.timer(timer.interval_s, name=name)(tick)

    def run(self) -> None:
        """Run until SIGTERM/SIGINT (Faust's worker handles signals and stops cleanly)."""
        logs.configure_logging(self.service, self.settings.log_level)
        check_topics(self.settings, [s.topic for s in self.subscriptions])
        tracing.configure(
            self.service,
            self.settings.data_dir,
            self.settings.log_max_bytes,
            self.settings.log_keep,
            file_stem=replica_name(self.service, self.settings.replica),
        )
        metrics.serve(self.settings.metrics_port(self.service), self.settings.metrics_host)
        metrics.SERVICE_UP.labels(self.service).set(1)
        self.ready_file().unlink(missing_ok=True)
        app = self.build_app()
        # Logging stays ours (JSON lines, set up above): faust must not reconfigure it, and
        # its terminal spinner must not write cursor codes into the log file.
        worker = faust.Worker(
            app, loglevel=self.settings.log_level, quiet=True, override_logging=False
        )
        worker.spinner = None
        try:
            worker.execute_from_commandline()
        finally:
            if self._producer is not None:
                self._producer.close()
            for producer in self._transactional_producers:
                producer.close()
            tracing.shutdown()
            for store in self.stores:
                store.close()


class _Flusher:
    """Delivers a stream's handled records in groups, then acknowledges them (see consume)."""

    def __init__(self, worker: Worker, stream: Any, store: StateStore, limit: int) -> None:
        self._worker, self._stream, self._store = worker, stream, store
        self._queue: GroupQueue[tuple[Any, Processed]] = GroupQueue(limit)
        self._task = asyncio.create_task(self._run())

    async def add(self, event: Any, processed: Processed) -> None:
        await self._queue.add((event, processed))

    async def _run(self) -> None:
        async for group in self._queue.groups():
            # Until delivered: a record is never acknowledged before its outputs are.
            await self._worker.deliver_until_done([p for _, p in group], self._store)
            for event, _ in group:
                await self._stream.ack(event)

    def close(self) -> None:
        self._task.cancel()


def _record(message: Any) -> InRecord:
    return InRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=_headers(message.headers),
    )


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if isinstance(v, bytes) else str(v).encode()) for k, v in items]
