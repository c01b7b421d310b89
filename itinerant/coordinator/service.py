"""The saga coordinator: ingress, the process manager over progress events, timers, results.

It is the single owner of saga state and the only writer of the results topic. Every input is
handled inside one state-store transaction that records the input id, the saga change and the
messages to send, so a restarted coordinator resumes every saga, timers included.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from itinerant.errors import ItinerantError, SchemaViolation
from itinerant.mesh import Mesh
from itinerant.observability import logs, metrics, tracing
from itinerant.runtime import routing
from itinerant.runtime.dlq import dead_letter
from itinerant.runtime.processor import Processed
from itinerant.runtime.store import Store
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, InRecord, OutMessage, now_utc, parse_type
from itinerant.wire.events import APPROVAL_REQUEST_TYPE, CompensateCommand, StepEvent
from itinerant.wire.ids import derived_id
from itinerant.wire.slip import Approval, Slip

from . import repository
from .approval import DECISION_TYPE, ApprovalDecision
from .ingress import Accepted, Refused, read_request
from .results import RESULT_TYPE, Origin, SagaResult, StepSummary
from .saga import (
    Command,
    Compensate,
    Dispatch,
    Finish,
    Saga,
    SagaState,
    begin_compensation,
    on_approval_request,
    on_decision,
    on_event,
    on_tick,
    start,
)

log = logging.getLogger(__name__)

SERVICE = "coordinator"
DISCARD_TYPE = "itinerant.saga.discard_requested"


class DiscardRequest(BaseModel):
    """``itinerant.saga.discard_requested.v1``: an operator (or an A2A cancel) stops a saga."""

    model_config = ConfigDict(extra="forbid")

    saga_id: str
    why: str = Field(min_length=1, max_length=500)
    entry: str | None = None
    by: str = "operator"


SOURCE = f"/itinerant/{SERVICE}"


@dataclass(frozen=True)
class GateRequest:
    """A step's output forwarded by the runtime to the approval gate."""

    saga_id: str
    slip: Slip
    budget: Budget
    payload: dict[str, Any]
    reasons: list[str]
    amount_usd: float | None


Control = StepEvent | DiscardRequest | ApprovalDecision | GateRequest


class Coordinator:
    def __init__(self, settings: Settings, store: Store, mesh: Mesh) -> None:
        self.mesh = mesh
        self.settings = mesh.bind(settings)
        self.store = store
        self.first_step = mesh.entry_step(self.settings)

    # -- ingress -------------------------------------------------------------------------------

    async def handle_request(self, record: InRecord) -> Processed:
        started = time.perf_counter()
        read = read_request(record, self.settings.max_message_bytes, self.mesh.request_model)
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
                processed = self._refuse(record, read)
            else:
                processed = self._accept(record, read)
        self._observe(record.topic, processed, started)
        return processed

    def _accept(self, record: InRecord, read: Accepted) -> Processed:
        now = now_utc()
        request = read.request
        deadline_s = min(request.deadline_s or self.settings.default_deadline_s, 3600)
        budget = Budget(
            max_hops=min(request.max_hops or self.settings.default_max_hops, 100),
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
        )
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
            saga.note(
                now,
                "dispatched",
                f"to {self.first_step.agent}.{self.first_step.action}; request from "
                f"{record.topic}[{record.partition}]@{record.offset}",
            )
            [dispatch] = routing.messages(
                self.settings,
                forward_id=derived_id(read.message_id, SERVICE, "dispatch"),
                causation_id=read.message_id,
                source=SOURCE,
                saga_id=saga.saga_id,
                slip=Slip(steps=[self.first_step]),
                budget=budget,
                data=self.mesh.first_payload(request).model_dump_json().encode(),
                traceparent=saga.traceparent,
            )
            dispatch = tracing.stamp(dispatch, saga.saga_id)
            repository.save(conn, saga)
            seqs = self.store.record(conn, read.message_id, [dispatch])
        return Processed("ok", [dispatch], seqs)

    def _refuse(self, record: InRecord, read: Refused) -> Processed:
        """A request we cannot run: keep the original in the DLQ and tell the client why."""
        now = now_utc()
        error = read.error
        log.warning("refused request at %s@%d: %s", record.topic, record.offset, error)
        metrics.DLQ_MESSAGES.labels(SERVICE, error.reason).inc()
        origin = Origin(topic=record.topic, partition=record.partition, offset=record.offset)
        outputs = [
            dead_letter(
                record,
                error,
                service=SERVICE,
                dlq_topic=self.settings.dlq_topic,
                attempts=1,
                saga_id=read.saga_id,
            ),
            self._result_message(
                read.saga_id,
                read.message_id,
                SagaResult(
                    saga_id=read.saga_id,
                    status=SagaState.REJECTED.value,
                    reason=error.reason,
                    error=error.describe(),
                    started_at=now,
                    finished_at=now,
                    duration_ms=0.0,
                    origin=origin,
                ),
            ),
        ]
        with self.store.transaction() as conn:
            if repository.load(conn, read.saga_id) is None:
                saga = Saga(
                    saga_id=read.saga_id,
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
        metrics.SAGAS_FINISHED.labels(SagaState.REJECTED.value, error.reason).inc()
        return Processed("rejected", outputs, seqs, error)

    # -- progress events -----------------------------------------------------------------------

    async def handle_event(self, record: InRecord) -> Processed:
        started = time.perf_counter()
        try:
            env = Envelope.from_record(record)
            name = parse_type(env.type)[0]
            if name == APPROVAL_REQUEST_TYPE:
                event: Control = self._gate_request(env)
            elif name.split(".")[:2] != ["itinerant", "saga"]:
                raise SchemaViolation(f"not a saga event: {env.type}", reason="unsupported_type")
            else:
                try:
                    if name == DISCARD_TYPE:
                        event = DiscardRequest.model_validate_json(env.data)
                    elif name == DECISION_TYPE:
                        event = ApprovalDecision.model_validate_json(env.data)
                    else:
                        event = StepEvent.model_validate_json(env.data)
                except ValidationError as exc:
                    raise SchemaViolation(f"invalid saga event: {exc.errors()[:3]}") from exc
        except ItinerantError as exc:
            metrics.DLQ_MESSAGES.labels(SERVICE, exc.reason).inc()
            dlq = dead_letter(
                record,
                exc,
                service=SERVICE,
                dlq_topic=self.settings.dlq_topic,
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

    def _gate_request(self, env: Envelope) -> GateRequest:
        if env.slip is None or env.budget is None:
            raise SchemaViolation(
                "an approval step needs ce_routingslip and ce_budget headers", reason="missing_slip"
            )
        if env.slip.branch is not None or env.slip.at_end:
            raise SchemaViolation("an approval request's slip must point at an approval gate")
        if not isinstance(env.slip.current, Approval):
            raise SchemaViolation("an approval request's slip does not point at an approval gate")
        try:
            payload = json.loads(env.data)
            if not isinstance(payload, dict):
                raise ValueError(f"a JSON object is expected, not {type(payload).__name__}")
            check = self.mesh.approval_policy(payload)
        except (ValueError, ValidationError) as exc:
            raise SchemaViolation(
                f"the approval policy cannot read the payload at the gate: {exc}"
            ) from exc
        return GateRequest(env.saga_id, env.slip, env.budget, payload, check.reasons, check.amount)

    def _apply_event(self, env: Envelope, event: Control) -> Processed:
        recorded = self.store.recorded_outputs(env.id)
        if recorded is not None:
            return Processed("duplicate", recorded)
        now = now_utc()
        with self.store.transaction() as conn:
            saga = repository.load(conn, event.saga_id)
            if saga is None:
                log.warning("event %s for unknown saga %s ignored", env.id, event.saga_id)
                self.store.record(conn, env.id, [])
                return Processed("ignored")
            if isinstance(event, DiscardRequest):
                saga.updated_at = now
                saga.note(now, "discard_requested", f"by {event.by}: {event.why}")
                commands = begin_compensation(saga, now, "discarded", f"{event.why} ({event.by})")
            elif isinstance(event, GateRequest):
                commands = on_approval_request(
                    saga,
                    step=event.slip.next,
                    message_id=env.id,
                    slip=event.slip,
                    budget=event.budget,
                    payload=event.payload,
                    reasons=event.reasons,
                    amount_usd=event.amount_usd,
                    now=now,
                    approval_timeout=self.settings.approval_timeout_s,
                    step_timeout=self.settings.step_timeout_s,
                )
                outcome = "requested" if saga.state is SagaState.AWAITING_APPROVAL else "not_needed"
                metrics.APPROVALS.labels(outcome).inc()
            elif isinstance(event, ApprovalDecision):
                waiting = saga.state is SagaState.AWAITING_APPROVAL
                commands = on_decision(
                    saga,
                    approve=event.decision == "approve",
                    by=event.by,
                    why=event.why,
                    message_id=env.id,
                    now=now,
                    step_timeout=self.settings.step_timeout_s,
                )
                if waiting:
                    metrics.APPROVALS.labels(f"{event.decision}d").inc()
            else:
                commands = on_event(saga, event, now, self.settings.step_timeout_s)
            outputs = self._execute(conn, saga, commands, env.id)
            seqs = self.store.record(conn, env.id, outputs)
        return Processed("ok", outputs, seqs)

    # -- timers --------------------------------------------------------------------------------

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
        self, conn: sqlite3.Connection, saga: Saga, commands: list[Command], cause: str
    ) -> list[OutMessage]:
        outputs: list[OutMessage] = []
        for command in commands:
            if isinstance(command, Compensate):
                outputs.append(self._compensate_message(saga, command, cause))
            elif isinstance(command, Dispatch):
                outputs.extend(self._dispatch_after_join(saga, command, cause))
            elif isinstance(command, Finish):
                outputs.append(self._finish(saga, cause))
        repository.save(conn, saga)
        return [tracing.stamp(m, saga.saga_id) for m in outputs]

    def _compensate_message(self, saga: Saga, command: Compensate, cause: str) -> OutMessage:
        step = command.step
        saga.note(saga.updated_at, "compensate", f"{step.agent}.{step.action} (step {step.index})")
        payload = CompensateCommand(
            action=step.action,
            step=step.index,
            branch=step.branch,
            output=step.output or {},
            reason=command.reason,
        )
        return Envelope(
            id=derived_id(cause, SERVICE, f"compensate:{step.index}:{step.branch}"),
            type=f"itinerant.{step.agent}.compensate.v1",
            source=SOURCE,
            saga_id=saga.saga_id,
            data=payload.model_dump_json().encode(),
            causation_id=cause,
            traceparent=saga.traceparent,
        ).to_message(self.settings.agent_topic(step.agent))

    def _dispatch_after_join(self, saga: Saga, command: Dispatch, cause: str) -> list[OutMessage]:
        """Gather: the merged output of a joined group goes to the step after it."""
        data = json.dumps(command.output).encode()
        return routing.messages(
            self.settings,
            forward_id=derived_id(cause, SERVICE, command.label or f"join:{command.group}"),
            causation_id=cause,
            source=SOURCE,
            saga_id=saga.saga_id,
            slip=command.slip,
            budget=command.budget,
            data=data,
            traceparent=saga.traceparent,
        )

    def _finish(self, saga: Saga, cause: str) -> OutMessage:
        now = now_utc()
        duration = (now - saga.created_at).total_seconds()
        metrics.SAGA_DURATION_SECONDS.labels(saga.state.value).observe(duration)
        metrics.SAGAS_FINISHED.labels(saga.state.value, saga.reason or "none").inc()
        result = SagaResult(
            saga_id=saga.saga_id,
            status=saga.state.value,
            reason=saga.reason,
            error=saga.error,
            itinerary=saga.output if saga.state is SagaState.COMPLETED else None,
            steps=[
                StepSummary(
                    index=s.index,
                    branch=s.branch,
                    agent=s.agent,
                    action=s.action,
                    status=s.status.value,
                    duration_ms=s.duration_ms,
                )
                for s in saga.steps
            ],
            started_at=saga.created_at,
            finished_at=now,
            duration_ms=round(duration * 1000, 3),
            budget=saga.budget,
        )
        return self._result_message(saga.saga_id, cause, result, saga.traceparent)

    def _result_message(
        self, saga_id: str, cause: str, result: SagaResult, traceparent: str | None = None
    ) -> OutMessage:
        return Envelope(
            id=derived_id(cause, SERVICE, "result"),
            type=RESULT_TYPE,
            source=SOURCE,
            saga_id=saga_id,
            data=result.model_dump_json().encode(),
            causation_id=cause,
            traceparent=traceparent,
        ).to_message(self.settings.results_topic)

    def _observe(self, topic: str, processed: Processed, started: float) -> None:
        metrics.MESSAGES_PROCESSED.labels(SERVICE, topic, processed.outcome).inc()
        metrics.PROCESSING_SECONDS.labels(SERVICE, topic).observe(time.perf_counter() - started)
