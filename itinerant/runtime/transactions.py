"""Kafka transactions for consume-process-produce: a batch's outputs and its input offsets are
committed together or not at all (docs/architecture.md#exactly-once-results).

The consumer is Faust's (aiokafka); the producer is confluent-kafka's. Kafka fences a
zombie by its consumer-group generation (KIP-447), so the offsets go with the group metadata of
the consuming member, which :class:`Member` writes in librdkafka's own form.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from itinerant.errors import BrokerUnavailable, TransactionAborted, TransactionFenced
from itinerant.runtime.producer import Refused, produce, producer_config
from itinerant.settings import Settings
from itinerant.wire.envelope import OutMessage

log = logging.getLogger(__name__)

Offsets = Mapping[tuple[str, int], int]  # (topic, partition) -> the next offset to consume

_MAGIC = b"CGMDv2:"


@dataclass(frozen=True)
class Member:
    """The consumer-group member whose records a transaction commits."""

    group_id: str
    generation: int
    member_id: str

    def metadata(self) -> bytes:
        """librdkafka's serialized ``rd_kafka_consumer_group_metadata_t`` (what confluent-kafka's
        ``Consumer.consumer_group_metadata()`` returns): magic, the generation in host byte
        order, the group and member ids each NUL-terminated, then a group instance id (none)."""
        return (
            _MAGIC
            + struct.pack("=i", self.generation)
            + self.group_id.encode()
            + b"\0"
            + self.member_id.encode()
            + b"\0"
            + b"\x01"
        )


class TransactionalProducer:
    """One transactional producer (its own ``transactional.id``); one transaction at a time."""

    def __init__(
        self, settings: Settings, transactional_id: str, refused: Refused | None = None
    ) -> None:
        self._timeout_s = max(settings.broker_timeout_s * 6, settings.transaction_timeout_s)
        self._refused = refused
        self._producer = Producer(
            producer_config(
                settings,
                **{
                    "client.id": transactional_id,
                    "transactional.id": transactional_id,
                    "enable.idempotence": True,
                    "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
                    # librdkafka insists a message may not outlive its transaction
                    "message.timeout.ms": int(settings.transaction_timeout_s * 1000),
                    "logger": logging.getLogger("itinerant.librdkafka"),
                },
            )
        )
        self._ready = False
        self._lock = threading.Lock()

    async def start(self) -> None:
        """Register the id with Kafka; this fences an earlier process with the same id and
        aborts what it left open."""
        if not self._ready:
            await asyncio.to_thread(self._call, self._producer.init_transactions, self._timeout_s)
            self._ready = True

    async def commit(
        self, messages: Sequence[OutMessage], offsets: Offsets, member: Member
    ) -> None:
        """Send ``messages`` (in order) and commit ``offsets`` for ``member`` in one transaction.

        Raises :class:`TransactionAborted` when it had to be aborted (nothing of it counts; try
        again) and :class:`TransactionFenced` when this producer may not send any more."""
        await self.start()
        pending = list(messages)
        while True:
            too_large = await asyncio.to_thread(self._transact, pending, offsets, member)
            if not too_large:
                return
            pending = self._replace(pending, too_large)

    def _replace(
        self, messages: list[OutMessage], too_large: list[tuple[int, str]]
    ) -> list[OutMessage]:
        """The messages with those Kafka refused as too large replaced (or dropped)."""
        if self._refused is None:
            raise TransactionAborted(f"kafka refused {len(too_large)} message(s) as too large")
        refused = dict(too_large)
        kept: list[OutMessage] = []
        for index, message in enumerate(messages):
            if index not in refused:
                kept.append(message)
                continue
            replacement = self._refused(message, refused[index])
            if replacement is not None:
                kept.append(replacement)
        return kept

    def _transact(
        self, messages: Sequence[OutMessage], offsets: Offsets, member: Member
    ) -> list[tuple[int, str]]:
        """The whole transaction, in a worker thread; the indexes of messages refused as too
        large (then nothing was committed) or an empty list once committed."""
        with self._lock:
            failures: list[tuple[int, KafkaError]] = []
            self._call(self._producer.begin_transaction)
            try:
                for index, message in enumerate(messages):
                    self._produce(index, message, failures)
                positions = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
                self._call(
                    self._producer.send_offsets_to_transaction,
                    positions,
                    member.metadata(),
                    self._timeout_s,
                )
                self._producer.flush(self._timeout_s)
                too_large = [
                    (i, f"kafka refused a {len(messages[i].value)}-byte message: {e}")
                    for i, e in failures
                    if e.code() == KafkaError.MSG_SIZE_TOO_LARGE
                ]
                if failures:
                    self._abort()
                    if too_large:
                        return too_large
                    raise TransactionAborted(f"kafka did not take {len(failures)} message(s)")
                self._commit()
            except TransactionAborted:
                self._abort()
                raise
            except BrokerUnavailable as exc:  # a produce Kafka refused outright
                self._abort()
                raise TransactionAborted(str(exc)) from exc
            return []

    def _commit(self) -> None:
        """``commit_transaction``, again on a retriable error: such an error leaves it unknown
        whether the commit happened, and only committing again (never aborting) settles that."""
        for attempt in range(1, 4):
            try:
                self._producer.commit_transaction(self._timeout_s)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None or not error.retriable() or attempt == 3:
                    self._call(_raise, exc)
                log.warning("committing the transaction: %s; again", error)

    def _produce(self, index: int, message: OutMessage, failures: list[Any]) -> None:
        def report(err: KafkaError | None, _msg: Any) -> None:
            if err is not None:
                failures.append((index, err))

        produce(self._producer, message, report)

    def _abort(self) -> None:
        try:
            self._call(self._producer.abort_transaction, self._timeout_s)
        except TransactionAborted as exc:  # nothing is open, or it is being aborted anyway
            log.debug("abort: %s", exc)

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        """A transactional call, its error classed: fatal ones fence this producer."""
        try:
            return method(*args)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and (error.fatal() or error.code() == KafkaError.PRODUCER_FENCED):
                raise TransactionFenced(f"kafka transaction: {error}") from exc
            raise TransactionAborted(f"kafka transaction: {exc}") from exc

    def close(self) -> None:
        try:
            self._producer.flush(1.0)
        except KafkaException as exc:  # closing anyway
            log.debug("closing transactional producer: %s", exc)


def _raise(exc: Exception) -> None:
    raise exc
