"""The exactly-once flusher: a stream's handled records leave in groups, each group one Kafka
transaction holding their outputs and their offsets (docs/architecture.md#exactly-once-results).

A record is committed only by the group member that received it, in the generation it received
it in: after a rebalance the partition's new owner (or this process, from the committed offset)
reads it again, and the inbox tells that redelivery to send the recorded outputs once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from itinerant.errors import TransactionAborted, TransactionFenced
from itinerant.observability import metrics
from itinerant.runtime.delivery import MAX_DELIVERY_DELAY_S, backoff_s
from itinerant.runtime.grouping import GroupQueue
from itinerant.runtime.outcome import Processed
from itinerant.runtime.transactions import Member, TransactionalProducer
from itinerant.settings import Settings

log = logging.getLogger(__name__)

Pending = tuple[Any, Processed, int]  # the Faust event, what handling it produced, generation


class TransactionalFlusher:
    """Delivers a stream's handled records a transaction at a time, then acknowledges them."""

    def __init__(
        self,
        *,
        consumer: Any,
        stream: Any,
        producer: TransactionalProducer,
        settings: Settings,
        service: str,
        on_fenced: Callable[[], None] = lambda: os.kill(os.getpid(), signal.SIGTERM),
    ) -> None:
        self._on_fenced = on_fenced
        self._consumer, self._stream, self._producer = consumer, stream, producer
        self._settings, self._service = settings, service
        self._events_topic = settings.events_topic
        self._queue: GroupQueue[Pending] = GroupQueue(settings.batch_max)
        self._committed: dict[tuple[str, int], int] = {}
        self._committing = asyncio.Lock()
        self._task = asyncio.create_task(self._run())

    def generation(self) -> int:
        """The consumer's generation now; a record is tagged with it when received."""
        member = self._consumer.group_member()
        return member.generation if member is not None else -1

    async def add(self, event: Any, processed: Processed, generation: int) -> None:
        await self._queue.add((event, processed, generation))

    async def settle(self) -> None:
        """Wait for the transaction being committed, if any (a rebalance calls this before it hands
        partitions over, so their new owner reads the offsets that transaction commits)."""
        async with self._committing:
            return

    async def _run(self) -> None:
        async for group in self._queue.groups():
            if not await self._commit_until_done(group):
                return  # fenced: this process is stopping
            for event, _, _ in group:
                await self._stream.ack(event)  # Faust's bookkeeping; it commits nothing

    async def _commit_until_done(self, group: list[Pending]) -> bool:
        """Commit the group's records that are still this member's; False once fenced."""
        failures = 0
        while True:
            member: Member | None = self._consumer.group_member()
            mine = self._still_mine(group, member)
            if member is None or not mine:
                if group:
                    metrics.TRANSACTIONS.labels(self._service, "dropped").inc()
                return True
            offsets = self._offsets(mine)
            outputs = [m for _, p, _ in mine for m in p.outputs]
            events = [m for m in outputs if m.topic == self._events_topic]
            rest = [m for m in outputs if m.topic != self._events_topic]
            try:
                async with self._committing:
                    await self._producer.commit([*events, *rest], offsets, member)
            except TransactionFenced as exc:
                # A newer process took this replica's transactional id: this one is a zombie.
                # Its records stay unacknowledged; the newer process has them.
                log.critical("%s; stopping this process (%s)", exc, exc.hint)
                self._on_fenced()
                return False
            except TransactionAborted as exc:
                failures += 1
                metrics.TRANSACTIONS.labels(self._service, "aborted").inc()
                delay = backoff_s(self._settings, failures, MAX_DELIVERY_DELAY_S)
                log.warning(
                    "transaction of %d record(s) aborted (%s); again in %.1fs",
                    len(mine),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            metrics.TRANSACTIONS.labels(self._service, "committed").inc()
            self._committed.update(offsets)
            if len(mine) < len(group):
                metrics.TRANSACTIONS.labels(self._service, "dropped").inc()
            return True

    def _still_mine(self, group: list[Pending], member: Member | None) -> list[Pending]:
        """The records this member may still commit: received in its current generation, on a
        partition it holds, past what was committed there."""
        if member is None:
            return []
        held = {(tp.topic, tp.partition) for tp in self._consumer.assignment()}
        mine = []
        for event, processed, generation in group:
            where = (event.message.topic, event.message.partition)
            if (
                generation == member.generation
                and where in held
                and event.message.offset >= self._committed.get(where, -1)
            ):
                mine.append((event, processed, generation))
        return mine

    @staticmethod
    def _offsets(group: list[Pending]) -> dict[tuple[str, int], int]:
        offsets: dict[tuple[str, int], int] = {}
        for event, _, _ in group:
            where = (event.message.topic, event.message.partition)
            offsets[where] = max(offsets.get(where, 0), event.message.offset + 1)
        return offsets

    def close(self) -> None:
        self._task.cancel()
