"""An asyncio face on confluent-kafka's producer: ``await send_all(messages)`` returns once Kafka
has acknowledged every message, which is what lets a service commit its input offset safely."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from itinerant.brokers.client_security import client_config
from itinerant.errors import BrokerUnavailable, MessageTooLarge
from itinerant.settings import Settings
from itinerant.wire.envelope import OutMessage

log = logging.getLogger(__name__)

#: What to send instead of a message Kafka refused as too large (``None``: nothing).
Refused = Callable[[OutMessage, str], OutMessage | None]


def producer_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        **client_config(settings),
        "linger.ms": settings.producer_linger_ms,
        "acks": "all",
        "enable.idempotence": settings.idempotent_producer,
        "message.timeout.ms": int(settings.broker_timeout_s * 6000),
        "socket.connection.setup.timeout.ms": int(settings.broker_timeout_s * 1000),
        "message.max.bytes": settings.record_max_bytes,
    }
    config.update(extra)
    return config


class AsyncProducer:
    """Produces from the event loop; a background thread serves delivery reports."""

    def __init__(self, settings: Settings, client_id: str) -> None:
        self._producer = Producer(
            producer_config(
                settings,
                **{
                    "client.id": client_id,
                    "error_cb": self._on_error,
                    # librdkafka's own log lines go through our (JSON) logging, not stderr.
                    "logger": logging.getLogger("itinerant.librdkafka"),
                },
            )
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name=f"{client_id}-poll", daemon=True)
        self._thread.start()
        self._retry_delay_s = 0.5

    def _on_error(self, err: KafkaError) -> None:
        log.warning("kafka producer: %s", err)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    async def send_all(
        self, messages: Sequence[OutMessage], refused: Refused | None = None
    ) -> None:
        """Send ``messages`` (in order) and wait for all acks; retry until Kafka takes them.

        Kafka refusing a message as too large is final: without ``refused`` that raises
        :class:`MessageTooLarge`; with it, the message is replaced by what ``refused`` returns
        (sent like the rest) or, for ``None``, given up."""
        pending = list(messages)
        while pending:
            failed, too_large = await self._send_once(pending)
            instead: list[OutMessage] = []
            for message, err in too_large:
                why = f"kafka refused a {len(message.value)}-byte message to {message.topic}: {err}"
                if refused is None:
                    raise MessageTooLarge(why)
                replacement = refused(message, why)
                if replacement is not None:
                    instead.append(replacement)
            if failed:
                log.error(
                    "kafka did not acknowledge %d message(s); retrying in %.1fs "
                    "(is the broker up?)",
                    len(failed),
                    self._retry_delay_s,
                )
                await asyncio.sleep(self._retry_delay_s)
            pending = failed + instead

    async def _send_once(
        self, messages: Sequence[OutMessage]
    ) -> tuple[list[OutMessage], list[tuple[OutMessage, KafkaError]]]:
        """Produce every message; one future for the whole batch, settled by the last report.
        Returns the messages to try again and those refused as too large."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        failures: list[tuple[int, KafkaError]] = []
        remaining = [len(messages)]
        lock = threading.Lock()

        def report(index: int, err: KafkaError | None) -> None:
            with lock:  # delivery reports come from the poll thread (and rarely this one)
                if err is not None:
                    failures.append((index, err))
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                loop.call_soon_threadsafe(_settle, done, None)

        for index, message in enumerate(messages):
            self._produce(message, functools.partial(_report_at, report, index))
        await done
        failed: list[OutMessage] = []
        too_large: list[tuple[OutMessage, KafkaError]] = []
        for index, err in sorted(failures, key=lambda f: f[0]):
            if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                too_large.append((messages[index], err))
            else:
                failed.append(messages[index])
        return failed, too_large

    def _produce(self, message: OutMessage, deliver: Any) -> None:
        produce(self._producer, message, deliver)

    def warm(self, timeout_s: float) -> None:
        """Connect and fetch metadata now (and, when idempotent, the producer id), so the first
        record handled does not pay for it. A broker that does not answer is not an error here:
        sending retries until it does."""
        try:
            self._producer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            log.warning("kafka producer could not fetch metadata yet: %s", exc)

    def close(self, timeout_s: float = 5.0) -> None:
        self._producer.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=1.0)


def produce(producer: Producer, message: OutMessage, deliver: Any) -> None:
    """``producer.produce`` that waits for room in its queue; a message too large for the
    client is reported to ``deliver`` like the broker's refusal."""
    while True:
        try:
            producer.produce(
                message.topic,
                value=message.value,
                key=message.key,
                headers=message.headers,
                on_delivery=deliver,
            )
            return
        except BufferError:
            producer.poll(0.05)
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if error is not None and error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                deliver(error, None)  # refused before sending: reported like the broker's
                return
            raise BrokerUnavailable(f"cannot produce to {message.topic}: {exc}") from exc


def _settle(future: asyncio.Future[None], _: None) -> None:
    if not future.done():
        future.set_result(None)


def _report_at(
    report: Callable[[int, KafkaError | None], None], index: int, err: KafkaError | None, _msg: Any
) -> None:
    report(index, err)
