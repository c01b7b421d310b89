"""Nothing lost between a record and its acknowledgement (docs/architecture.md#no-loss-paths).

- A record whose handling raises (the handlers themselves never do: a failure outside them, such
  as a locked or full state store) is tried again with backoff, then dead-lettered as it came,
  with reason ``retries_exhausted``; it is acknowledged only then.
- Outputs the broker does not take are sent again in the running worker, backing off up to
  :data:`MAX_DELIVERY_DELAY_S`, until they are delivered; the records that caused them are
  acknowledged only after (their partition waits meanwhile). Each failed try
  counts in ``itinerant_delivery_failures_total`` (alert ``ItinerantDeliveryFailing``).
- An output the broker will never take (it refuses its size) is replaced by a notice on the
  dead-letter topic that names it (its ids and where it was going, without its payload), so one
  such message neither blocks its partition nor loops.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from itinerant.errors import ItinerantError, NonRetryableError, RetriesExhausted
from itinerant.observability import metrics
from itinerant.runtime.dlq import (
    AT,
    ERROR,
    ERROR_TYPE,
    MAX_ERROR_CHARS,
    ORIGIN_TOPIC,
    REASON,
    SERVICE,
    dead_letter,
)
from itinerant.runtime.outcome import Processed
from itinerant.settings import Settings
from itinerant.wire.envelope import InRecord, OutMessage

log = logging.getLogger(__name__)

RecordHandler = Callable[[InRecord], Awaitable[Processed]]
Deliver = Callable[[Sequence[Processed]], Awaitable[None]]

MAX_DELIVERY_DELAY_S = 30.0
UNDELIVERABLE = "undeliverable"
#: What an undeliverable notice keeps of the message it stands for: its ids, never its payload.
KEPT_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_sagaid", "ce_signer", "traceparent")
TRUNCATED = "x-dlq-truncated"


def backoff_s(settings: Settings, attempt: int, ceiling_s: float) -> float:
    """Full-jitter exponential backoff for the ``attempt``-th retry (1-based)."""
    base = max(settings.retry_base_delay_s, 0.05)
    return random.uniform(0, min(base * 2 ** (attempt - 1), ceiling_s))


async def handle_or_dead_letter(
    handle: RecordHandler, record: InRecord, *, service: str, settings: Settings
) -> Processed:
    """``handle(record)``; when it raises, again with backoff (``ITINERANT_MAX_ATTEMPTS`` tries
    in all), then the record as it came, dead-lettered. Never raises, never drops the record."""
    attempts = settings.max_attempts
    failure: Exception | None = None
    for attempt in range(1, attempts + 1):
        try:
            return await handle(record)
        except Exception as exc:  # outside the handler: the store, the disk, a bug of ours
            failure = exc
            log.exception(
                "handling %s[%d]@%d failed (try %d of %d)",
                record.topic,
                record.partition,
                record.offset,
                attempt,
                attempts,
            )
            metrics.RETRIES.labels(service, "handling_failed").inc()
            if attempt < attempts:
                await asyncio.sleep(backoff_s(settings, attempt, settings.retry_max_delay_s))
    error = RetriesExhausted(
        f"handling the record failed {attempts} times outside its handler, last with "
        f"{type(failure).__name__}: {failure}",
        attempts=attempts,
    )
    metrics.DLQ_MESSAGES.labels(service, error.reason).inc()
    saga = record.header("ce_sagaid")
    letter = dead_letter(
        record,
        error,
        service=service,
        dlq_topic=settings.dlq_topic,
        attempts=attempts,
        saga_id=saga.decode(errors="replace") if saga else None,
    )
    return Processed("dead_lettered", [letter], [], error)


async def deliver_until_done(
    deliver: Deliver, batch: Sequence[Processed], *, service: str, settings: Settings
) -> None:
    """``deliver(batch)``, again with backoff until the broker took it all; an output it will
    never take is replaced by an undeliverable notice (see the module's docstring)."""
    failures = 0
    while True:
        try:
            await deliver(batch)
        except NonRetryableError as exc:
            log.error("kafka refuses an output for good (%s); sending the rest apart", exc)
            await _deliver_apart(deliver, batch, service=service, settings=settings)
            return
        except Exception as exc:
            failures += 1
            metrics.DELIVERY_FAILURES.labels(service).inc()
            delay = backoff_s(settings, failures, MAX_DELIVERY_DELAY_S)
            log.error(
                "could not deliver %d output(s) (%s); retrying in %.1fs, their records stay "
                "unacknowledged",
                sum(len(p.outputs) for p in batch),
                exc,
                delay,
            )
            await asyncio.sleep(delay)
        else:
            if failures:
                log.info("delivered after %d failed tries", failures)
            return


async def _deliver_apart(
    deliver: Deliver, batch: Sequence[Processed], *, service: str, settings: Settings
) -> None:
    """Each output alone; a refused one becomes a notice; then the outbox rows are marked sent.
    A retryable failure here propagates to the caller's retry (repeats are deduplicated by id)."""
    for processed in batch:
        for message in processed.outputs:
            try:
                await deliver([Processed(processed.outcome, [message])])
            except NonRetryableError as exc:
                log.error(
                    "output %s to %s is undeliverable: %s; a notice goes to %s",
                    _text(message.header("ce_id")),
                    message.topic,
                    exc,
                    settings.dlq_topic,
                )
                metrics.DLQ_MESSAGES.labels(service, UNDELIVERABLE).inc()
                await deliver_until_done(
                    deliver,
                    [
                        Processed(
                            "undeliverable", [undeliverable_notice(message, exc, service, settings)]
                        )
                    ],
                    service=service,
                    settings=settings,
                )
        await deliver([Processed(processed.outcome, [], processed.outbox_seqs)])


def undeliverable_notice(
    message: OutMessage, error: ItinerantError, service: str, settings: Settings
) -> OutMessage:
    """A small dead letter standing for ``message``, which the broker refused: its ids and its
    destination, no payload (``x-dlq-truncated: payload``)."""
    kept = [(name, value) for name, value in message.headers if name in KEPT_HEADERS and value]
    text = error.describe()[:MAX_ERROR_CHARS]
    return OutMessage(
        topic=settings.dlq_topic,
        key=message.key,
        value=b"",
        headers=[
            *kept,
            (REASON, UNDELIVERABLE.encode()),
            (ERROR_TYPE, type(error).__name__.encode()),
            (ERROR, f"{text} ({len(message.value)}-byte value)".encode()),
            (SERVICE, service.encode()),
            (ORIGIN_TOPIC, message.topic.encode()),
            (TRUNCATED, b"payload"),
            (AT, datetime.now(UTC).isoformat().encode()),
        ],
    )


def _text(raw: bytes | None) -> str:
    return raw.decode(errors="replace") if raw else "?"
