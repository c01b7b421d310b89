"""What a message that cannot go on becomes: data, never an exception out of the consumer loop.

A failure that stops the saga (a business failure, an exhausted budget, a loop) becomes a
``step_failed`` event; any other becomes a dead letter (the original record plus ``x-dlq-*``
headers) and a ``step_deadlettered`` (or ``compensation_failed``) event that parks the saga
(see docs/architecture.md#errors and docs/architecture.md#the-dead-letter-topic).
"""

from __future__ import annotations

import contextlib
import logging

from itinerant.errors import ItinerantError
from itinerant.observability import metrics
from itinerant.runtime.dlq import dead_letter
from itinerant.runtime.outcome import Processed
from itinerant.runtime.outputs import StepOutputs
from itinerant.runtime.store import StateStore
from itinerant.wire.envelope import Envelope, InRecord, now_utc, parse_type
from itinerant.wire.events import StepEvent, StepEventKind
from itinerant.wire.ids import name_id

log = logging.getLogger(__name__)


class Failures:
    """Turns one agent's failures into events and dead letters, recorded in its store."""

    def __init__(self, outputs: StepOutputs, store: StateStore) -> None:
        self.outputs = outputs
        self.store = store
        self.service = outputs.service

    def stop_saga(self, env: Envelope, action: str, step: int, exc: ItinerantError) -> Processed:
        event = self.outputs.step_event(
            env, StepEventKind.FAILED, action, step, reason=exc.reason, error=exc.describe()
        )
        outputs = [self.outputs.event(env, event)]
        with self.store.transaction() as conn:
            seqs = self.store.record(conn, env.inbox_key, outputs)
        return Processed("saga_failed", outputs, seqs, exc)

    def dead_letter(
        self,
        record: InRecord,
        env: Envelope | None,
        exc: ItinerantError,
        attempts: int,
        *,
        kind: StepEventKind = StepEventKind.DEADLETTERED,
        action: str | None = None,
        step: int | None = None,
        branch: int | None = None,
    ) -> Processed:
        believed = env is not None and exc.reason != "unauthenticated"
        inbox_key = dead_letter_key(env) if env is not None and believed else None
        if inbox_key is not None:
            recorded = self.store.recorded_outputs(inbox_key)
            if recorded is not None:
                # Another copy of a message already dead-lettered (a producer's retry, an
                # outbox resent): its letter is sent again as recorded, never a second one.
                log.info("%s was already dead-lettered; not a second time", inbox_key)
                return Processed("duplicate", recorded)
        metrics.DLQ_MESSAGES.labels(self.service, exc.reason).inc()
        log.error(
            "dead-lettering %s[%d]@%d: %s: %s",
            record.topic,
            record.partition,
            record.offset,
            exc.reason,
            exc.describe(),
        )
        saga_id = env.saga_id if env else _header_text(record, "ce_sagaid")
        outputs = [
            dead_letter(
                record,
                exc,
                service=self.service,
                dlq_topic=self.outputs.settings.dlq_topic,
                max_bytes=self.outputs.settings.record_max_bytes,
                attempts=attempts,
                saga_id=saga_id,
            )
        ]
        if exc.reason == "unauthenticated":
            # Not believed, so it speaks for no saga: parking the saga it names would let a
            # stranger stall anyone's request (docs/security.md#messages).
            env = saga_id = None
        if env is None and saga_id:
            # Headers too broken to decode, but the saga is known: it must still be parked.
            env = Envelope(
                id=_header_text(record, "ce_id")
                or name_id(record.topic, record.partition, record.offset),
                type="unknown.v1",
                source=self.outputs.source,
                saga_id=saga_id,
                data=b"",
                traceparent=_header_text(record, "traceparent"),
            )
        if env is not None:
            event = StepEvent(
                kind=kind,
                saga_id=env.saga_id,
                agent=self.service,
                action=action or _action_of(env, self.service),
                step=step if step is not None else (env.slip.next if env.slip else -1),
                branch=branch if branch is not None else (env.slip.branch if env.slip else None),
                message_id=env.id,
                at=now_utc(),
                reason=exc.reason,
                error=exc.describe()[:500],
            )
            with contextlib.suppress(ItinerantError):
                outputs.append(self.outputs.event(env, event))
        with self.store.transaction() as conn:
            seqs = self.store.record(conn, inbox_key, outputs)
        return Processed("dead_lettered", outputs, seqs, exc)


def dead_letter_key(env: Envelope) -> str:
    """What a dead letter is recorded under: the message and how often it was replayed, so
    copies of one delivery are dead-lettered once while each replay is handled anew
    (docs/architecture.md#the-dead-letter-topic)."""
    return f"{env.inbox_key}#dead-lettered-{env.replay_count}"


def _header_text(record: InRecord, name: str) -> str | None:
    raw = record.header(name)
    try:
        return raw.decode() if raw else None
    except UnicodeDecodeError:
        return None


def _action_of(env: Envelope, service: str) -> str:
    try:
        name, _ = parse_type(env.type)
    except ItinerantError:
        return "unknown"
    prefix = f"itinerant.{service}."
    return name[len(prefix) :] if name.startswith(prefix) else "unknown"
