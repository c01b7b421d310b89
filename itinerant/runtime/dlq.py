"""Dead-lettering (docs/architecture.md#the-dead-letter-topic): the original record, unchanged,
plus ``x-dlq-*`` headers."""

from __future__ import annotations

from datetime import UTC, datetime

from itinerant.errors import ItinerantError
from itinerant.wire.envelope import Headers, InRecord, OutMessage, replace_headers

MAX_ERROR_CHARS = 2000

REASON = "x-dlq-reason"
ERROR_TYPE = "x-dlq-error-type"
ERROR = "x-dlq-error"
SERVICE = "x-dlq-service"
ORIGIN_TOPIC = "x-dlq-origin-topic"
ORIGIN_PARTITION = "x-dlq-origin-partition"
ORIGIN_OFFSET = "x-dlq-origin-offset"
ATTEMPTS = "x-dlq-attempts"
AT = "x-dlq-at"
DLQ_HEADERS = (
    REASON,
    ERROR_TYPE,
    ERROR,
    SERVICE,
    ORIGIN_TOPIC,
    ORIGIN_PARTITION,
    ORIGIN_OFFSET,
    ATTEMPTS,
    AT,
)


def dead_letter(
    record: InRecord,
    error: ItinerantError,
    *,
    service: str,
    dlq_topic: str,
    attempts: int,
    saga_id: str | None,
) -> OutMessage:
    text = error.describe()
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    extra: Headers = [
        (REASON, error.reason.encode()),
        (ERROR_TYPE, type(error).__name__.encode()),
        (ERROR, text.encode()),
        (SERVICE, service.encode()),
        (ORIGIN_TOPIC, record.topic.encode()),
        (ORIGIN_PARTITION, str(record.partition).encode()),
        (ORIGIN_OFFSET, str(record.offset).encode()),
        (ATTEMPTS, str(attempts).encode()),
        (AT, datetime.now(UTC).isoformat().encode()),
    ]
    key = record.key if record.key is not None else (saga_id.encode() if saga_id else None)
    return OutMessage(
        topic=dlq_topic,
        key=key,
        value=record.value or b"",
        headers=replace_headers(record.headers, extra),
    )
