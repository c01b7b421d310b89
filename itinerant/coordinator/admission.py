"""Admission: a request read by ingress starts a saga, or is refused with a clear answer.

Accepted, it becomes a saga (with the request's budget, capped by the settings) and the dispatch
of its first step; refused, the original goes to the dead-letter topic and the client gets a
``rejected`` result (see docs/architecture.md#ingress).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from itinerant.errors import ItinerantError
from itinerant.mesh import Mesh
from itinerant.observability import metrics, tracing
from itinerant.runtime.dlq import dead_letter
from itinerant.runtime.outcome import Processed
from itinerant.runtime.store import Database, StateStore
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import InRecord, OutMessage, now_utc
from itinerant.wire.ids import name_id
from itinerant.wire.request import Request

from . import repository
from .ingress import Accepted, Refused
from .messages import SERVICE, first_dispatch, result_message
from .results import Origin, SagaResult
from .saga import Saga, SagaState, start

log = logging.getLogger(__name__)


class Admission:
    """Starts the sagas of accepted requests and answers refused ones."""

    def __init__(self, settings: Settings, store: StateStore, mesh: Mesh) -> None:
        self.settings = settings
        self.store = store
        self.mesh = mesh
        self.first_step = mesh.entry_step(settings)

    def accept(self, record: InRecord, read: Accepted, customer: str | None = None) -> Processed:
        now = now_utc()
        request = read.request
        budget = self._budget(request, now)
        with self.store.transaction() as conn:
            if repository.load(conn, read.saga_id) is not None:
                log.info("request %s repeats saga %s; ignored", read.message_id, read.saga_id)
                self.store.record(conn, read.message_id, [])
                return Processed("duplicate")
            saga = start(
                read.saga_id,
                request.model_dump(mode="json"),
                now,
                budget.deadline,
                self.settings.step_timeout_s,
            )
            saga.traceparent, _ = tracing.current_traceparent()
            saga.customer = customer or f"anonymous:{read.saga_id}"
            saga.limits = saga.budget = budget
            saga.note(
                now,
                "dispatched",
                f"to {self.first_step.agent}.{self.first_step.action}; request from "
                f"{record.topic}[{record.partition}]@{record.offset}",
            )
            dispatch = first_dispatch(
                self.settings,
                saga,
                read.message_id,
                self.first_step,
                budget,
                self.mesh.first_payload(request).model_dump_json().encode(),
            )
            repository.save(conn, saga)
            seqs = self.store.record(conn, read.message_id, [dispatch])
        return Processed("ok", [dispatch], seqs)

    def _budget(self, request: Request, now: datetime) -> Budget:
        """The request's own limits, never above the settings' defaults."""
        # The defaults are the ceilings too: a request may ask for less, never for more
        # (docs/security.md#trust-boundary).
        deadline_s = min(
            request.deadline_s or self.settings.default_deadline_s,
            self.settings.default_deadline_s,
        )
        return Budget(
            max_hops=min(
                request.max_hops or self.settings.default_max_hops, self.settings.default_max_hops
            ),
            deadline=now + timedelta(seconds=deadline_s),
            max_tokens=min(
                self.settings.default_max_tokens,
                request.max_tokens
                if request.max_tokens is not None
                else self.settings.default_max_tokens,
            ),
            max_cost_usd=min(
                self.settings.default_max_cost_usd,
                request.max_cost_usd
                if request.max_cost_usd is not None
                else self.settings.default_max_cost_usd,
            ),
            max_tool_calls=self.settings.default_max_tool_calls,
        )

    def refuse(self, record: InRecord, read: Refused) -> Processed:
        """A request we cannot run: keep the original in the DLQ and tell the client why.

        The answer never lands under another saga's id: when the id the refused request names
        is taken, it is answered under the id of its own position on the topic instead, and
        when that is taken too (someone claimed it beforehand), only the dead letter is kept."""
        now = now_utc()
        error = read.error
        log.warning("refused request at %s@%d: %s", record.topic, record.offset, error)
        metrics.DLQ_MESSAGES.labels(SERVICE, error.reason).inc()
        with self.store.transaction() as conn:
            saga_id = self._free_id(conn, record, read.saga_id)
            outputs = [
                dead_letter(
                    record,
                    error,
                    service=SERVICE,
                    dlq_topic=self.settings.dlq_topic,
                    max_bytes=self.settings.record_max_bytes,
                    attempts=1,
                    saga_id=saga_id,
                )
            ]
            if saga_id is not None:
                outputs.append(self._rejection(record, read.message_id, saga_id, error, now))
                saga = Saga(
                    saga_id=saga_id,
                    state=SagaState.REJECTED,
                    request={},
                    created_at=now,
                    updated_at=now,
                    deadline=now,
                    reason=error.reason,
                    error=error.describe(),
                )
                saga.note(now, "rejected", error.describe())
                repository.save(conn, saga)
            seqs = self.store.record(conn, read.message_id, outputs)
        if saga_id is not None:
            metrics.SAGAS_FINISHED.labels(SagaState.REJECTED.value, error.reason).inc()
        return Processed("rejected", outputs, seqs, error)

    def _rejection(
        self,
        record: InRecord,
        message_id: str,
        saga_id: str,
        error: ItinerantError,
        now: datetime,
    ) -> OutMessage:
        return result_message(
            self.settings,
            saga_id,
            message_id,
            SagaResult(
                saga_id=saga_id,
                status=SagaState.REJECTED.value,
                reason=error.reason,
                error=error.describe(),
                started_at=now,
                finished_at=now,
                duration_ms=0.0,
                origin=Origin(topic=record.topic, partition=record.partition, offset=record.offset),
            ),
        )

    def _free_id(self, conn: Database, record: InRecord, wanted: str) -> str | None:
        """``wanted`` if no saga has it, else the id of the record's position if free, else
        None (then the refusal is only dead-lettered)."""
        if repository.load(conn, wanted) is None:
            return wanted
        position_id = name_id(record.topic, record.partition, record.offset)
        free = position_id if repository.load(conn, position_id) is None else None
        log.warning(
            "refused request at %s@%d names saga %s, which exists; %s",
            record.topic,
            record.offset,
            wanted,
            f"answered as {free}" if free else "dead-lettered only",
        )
        return free
