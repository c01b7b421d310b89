"""Nothing lost between a record and its acknowledgement (docs/architecture.md#no-loss-paths).

- A record whose handling raises (the handlers themselves never do: a failure outside them, such
  as a locked or full state store) is tried again with backoff, then dead-lettered as it came,
  with reason ``retries_exhausted``; it is acknowledged only then.
- Outputs the broker does not take are sent again in the running worker, backing off up to
  :data:`MAX_DELIVERY_DELAY_S`, until they are delivered; the records that caused them are
  acknowledged only after (their partition waits meanwhile). Each failed try
  counts in ``itinerant_delivery_failures_total`` (alert ``ItinerantDeliveryFailing``).
- An output the broker will never take (it refuses its size) is not retried: the producer
  sends a smaller dead letter in its place (``Worker._refused``, runtime/dlq.py ``shrink``), so
  one such message neither blocks its partition nor loops
  (docs/architecture.md#oversized-dead-letters).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from itinerant.errors import RetriesExhausted
from itinerant.observability import metrics
from itinerant.runtime.dlq import dead_letter
from itinerant.runtime.outcome import Processed
from itinerant.settings import Settings
from itinerant.wire.envelope import InRecord

log = logging.getLogger(__name__)

RecordHandler = Callable[[InRecord], Awaitable[Processed]]
Deliver = Callable[[Sequence[Processed]], Awaitable[None]]

MAX_DELIVERY_DELAY_S = 30.0


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
        max_bytes=settings.record_max_bytes,
        attempts=attempts,
        saga_id=saga.decode(errors="replace") if saga else None,
    )
    return Processed("dead_lettered", [letter], [], error)


async def deliver_until_done(
    deliver: Deliver, batch: Sequence[Processed], *, service: str, settings: Settings
) -> None:
    """``deliver(batch)``, again with backoff until the broker took it all."""
    failures = 0
    while True:
        try:
            await deliver(batch)
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
