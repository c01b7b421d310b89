"""The saga coordinator's inputs: requests, saga events and the timer, each in one transaction.

It is the single owner of saga state and the only writer of the results topic. Every input is
handled inside one state-store transaction that records the input id, the saga change and the
messages to send, so a restarted coordinator resumes every saga, timers included (see
docs/architecture.md#the-saga-coordinator). Admission of requests is in :mod:`.admission`,
reading and applying events in :mod:`.control_events`, building messages in :mod:`.messages`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from itinerant.errors import ItinerantError, Unauthenticated
from itinerant.mesh import Mesh
from itinerant.observability import logs, metrics, tracing
from itinerant.runtime.dlq import dead_letter
from itinerant.runtime.outcome import Processed
from itinerant.runtime.store import Database, StateStore
from itinerant.security.signing import mesh_keys, require_signing_key
from itinerant.settings import Settings
from itinerant.wire.bounds import InputBounds
from itinerant.wire.envelope import Envelope, InRecord, OutMessage, now_utc

from . import repository
from .admission import Admission
from .callers import Callers
from .control_events import Control, apply_control, read_control
from .ingress import Accepted, Refused, read_request
from .messages import (
    SERVICE,
    compensate_message,
    dispatch_messages,
    result_message,
    saga_result,
)
from .saga import (
    Command,
    Compensate,
    Dispatch,
    Finish,
    Saga,
    SagaState,
    begin_compensation,
    on_tick,
)

__all__ = ["SERVICE", "Coordinator"]

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(self, settings: Settings, store: StateStore, mesh: Mesh) -> None:
        self.mesh = mesh
        self.settings = mesh.bind(settings)
        self.store = store
        self.admission = Admission(self.settings, store, mesh)
        self.keys = mesh_keys(self.settings)
        self.bounds = InputBounds.of(self.settings)
        require_signing_key(self.settings, SERVICE)
        self.callers = Callers(self.settings, self.keys)

    # -- requests ------------------------------------------------------------------------------

    async def handle_request(self, record: InRecord) -> Processed:
        started = time.perf_counter()
        read = read_request(
            record, self.settings.max_message_bytes, self.mesh.request_model, self.bounds
        )
        customer: str | None = None
        try:
            sender, customer = self.callers.identify(record, read.saga_id)
        except Unauthenticated as exc:
            read = Refused(read.message_id, read.saga_id, exc)
        else:
            if sender is not None:  # dedup keyed on the verified sender (docs/security.md)
                read = replace(read, message_id=f"{sender}/{read.message_id}")
        with tracing.process_span(
            SERVICE,
            record.topic,
            traceparent=read.traceparent if isinstance(read, Accepted) else None,
            tracestate=read.tracestate if isinstance(read, Accepted) else None,
            saga_id=read.saga_id,
            message_id=read.message_id,
            partition=record.partition,
            offset=record.offset,
        ):
            recorded = self.store.recorded_outputs(read.message_id)
            if recorded is not None:
                processed = Processed("duplicate", recorded)
            elif isinstance(read, Refused):
                processed = self.admission.refuse(record, read)
            else:
                processed = self.admission.accept(record, read, customer)
        self._observe(record.topic, processed, started)
        return processed

    # -- saga events ---------------------------------------------------------------------------

    async def handle_event(self, record: InRecord) -> Processed:
        started = time.perf_counter()
        try:
            env = Envelope.from_record(record, self.bounds)
            env = env.evolve(signer=self.keys.verify(record))
            event = self.callers.authorized(env, read_control(env, self.mesh))
        except ItinerantError as exc:
            metrics.DLQ_MESSAGES.labels(SERVICE, exc.reason).inc()
            dlq = dead_letter(
                record,
                exc,
                service=SERVICE,
                dlq_topic=self.settings.dlq_topic,
                max_bytes=self.settings.record_max_bytes,
                attempts=1,
                saga_id=None,
            )
            with self.store.transaction() as conn:
                seqs = self.store.record(conn, None, [dlq])
            processed = Processed("dead_lettered", [dlq], seqs, exc)
            self._observe(record.topic, processed, started)
            return processed
        with tracing.envelope_span(SERVICE, record, env):
            processed = self._apply_event(env, event)
        self._observe(record.topic, processed, started)
        return processed

    def _apply_event(self, env: Envelope, event: Control) -> Processed:
        recorded = self.store.recorded_outputs(env.inbox_key)
        if recorded is not None:
            return Processed("duplicate", recorded)
        now = now_utc()
        with self.store.transaction() as conn:
            saga = repository.load(conn, event.saga_id)
            if saga is None:
                log.warning("event %s for unknown saga %s ignored", env.id, event.saga_id)
                self.store.record(conn, env.inbox_key, [])
                return Processed("ignored")
            if not self.callers.may_stop(saga, env, event):
                log.error(
                    "cancel %s from %s for another customer's saga; ignored", env.id, env.signer
                )
                self.store.record(conn, env.inbox_key, [])
                return Processed("ignored")
            if not self.callers.budget_kept(saga, event):
                log.error("event %s from %s raises the budget; ignored", env.id, env.signer)
                self.store.record(conn, env.inbox_key, [])
                return Processed("ignored")
            commands = apply_control(saga, event, env.id, now, self.settings)
            outputs = self._execute(conn, saga, commands, env.id)
            seqs = self.store.record(conn, env.inbox_key, outputs)
        return Processed("ok", outputs, seqs)

    # -- timers and operator stops -------------------------------------------------------------

    async def tick(self) -> list[Processed]:
        now = now_utc()
        done: list[Processed] = []
        conn = self.store.connection
        for saga_id in repository.due(conn, now):
            with logs.saga_context(saga_id), self.store.transaction() as txn:
                saga = repository.load(txn, saga_id)
                if saga is None:
                    continue
                waiting = saga.state is SagaState.AWAITING_APPROVAL
                commands = on_tick(saga, now)
                if waiting and saga.state is not SagaState.AWAITING_APPROVAL:
                    metrics.APPROVALS.labels("expired").inc()
                outputs = self._execute(txn, saga, commands, f"{saga_id}:tick:{saga.reason}")
                seqs = self.store.record(txn, None, outputs)
            done.append(Processed("timeout", outputs, seqs))
        for state in SagaState:
            metrics.SAGAS.labels(state.value).set(0)
        for state_name, count in repository.counts_by_state(conn).items():
            metrics.SAGAS.labels(state_name).set(count)
        return done

    def stop_saga(self, saga_id: str, reason: str, why: str) -> Processed | None:
        """Operator's stop (discard, cancel): compensate what was done and finish."""
        now = now_utc()
        with self.store.transaction() as conn:
            saga = repository.load(conn, saga_id)
            if saga is None:
                return None
            saga.updated_at = now
            commands = begin_compensation(saga, now, reason, why)
            outputs = self._execute(conn, saga, commands, f"{saga_id}:stop:{reason}")
            seqs = self.store.record(conn, None, outputs)
        return Processed("stopped", outputs, seqs)

    # -- commands ------------------------------------------------------------------------------

    def _execute(
        self, conn: Database, saga: Saga, commands: list[Command], cause: str
    ) -> list[OutMessage]:
        """The commands' messages, and the saga saved, in the caller's transaction."""
        outputs: list[OutMessage] = []
        for command in commands:
            if isinstance(command, Compensate):
                outputs.append(compensate_message(self.settings, saga, command, cause))
            elif isinstance(command, Dispatch):
                outputs.extend(dispatch_messages(self.settings, saga, command, cause))
            elif isinstance(command, Finish):
                outputs.append(self._finish(saga, cause))
        repository.save(conn, saga)
        return [tracing.stamp(m, saga.saga_id) for m in outputs]

    def _finish(self, saga: Saga, cause: str) -> OutMessage:
        now = now_utc()
        duration = (now - saga.created_at).total_seconds()
        metrics.SAGA_DURATION_SECONDS.labels(saga.state.value).observe(duration)
        metrics.SAGAS_FINISHED.labels(saga.state.value, saga.reason or "none").inc()
        result = saga_result(saga, now)
        return result_message(self.settings, saga.saga_id, cause, result, saga.traceparent)

    def _observe(self, topic: str, processed: Processed, started: float) -> None:
        metrics.MESSAGES_PROCESSED.labels(SERVICE, topic, processed.outcome).inc()
        metrics.PROCESSING_SECONDS.labels(SERVICE, topic).observe(time.perf_counter() - started)
