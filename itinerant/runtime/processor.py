"""The per-message pipeline of an agent service, independent of Kafka and Faust.

``Processor.process(record)`` decodes, dedups, checks the slip and the budget, runs the handler
(with retries), and records the outputs in the state store in the same transaction as the
handler's own changes. It returns what must be sent; ``Service`` sends it and only then lets the
consumer move on. A failure of any kind becomes data (an event or a dead letter), never an
exception that would escape the consumer loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from itinerant.errors import (
    BudgetExceeded,
    Disposition,
    HandlerError,
    InvalidSlip,
    ItinerantError,
    MessageTooLarge,
    RetriesExhausted,
    RetryableError,
    SchemaViolation,
    UnsupportedVersion,
    validation_problems,
)
from itinerant.observability import metrics, tracing
from itinerant.runtime import routing
from itinerant.runtime.agent import Agent, AgentServices, HandlerContext, HandlerSpec
from itinerant.runtime.dlq import dead_letter
from itinerant.runtime.llm import LLMProvider
from itinerant.runtime.store import Store
from itinerant.settings import Settings
from itinerant.wire import conditions
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, InRecord, OutMessage, now_utc, parse_type
from itinerant.wire.events import (
    COMPENSATE_ACTION,
    CompensateCommand,
    StepEvent,
    StepEventKind,
    event_type,
)
from itinerant.wire.ids import derived_id, name_id
from itinerant.wire.slip import Slip, Step

log = logging.getLogger(__name__)


@dataclass
class Processed:
    """What handling one record produced."""

    outcome: str
    outputs: list[OutMessage] = field(default_factory=list)
    outbox_seqs: list[int] = field(default_factory=list)
    error: ItinerantError | None = None


def default_budget(settings: Settings, now: datetime | None = None) -> Budget:
    now = now or now_utc()
    return Budget(
        max_hops=settings.default_max_hops,
        deadline=now + timedelta(seconds=settings.default_deadline_s),
        max_tokens=settings.default_max_tokens,
        max_cost_usd=settings.default_max_cost_usd,
    )


class Processor:
    """Runs one agent's handlers on records of its topic."""

    def __init__(
        self, agent: Agent, settings: Settings, store: Store, provider: LLMProvider
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.store = store
        self.provider = provider
        self.service = agent.name
        self.source = f"/itinerant/{agent.name}"
        self.topic = settings.agent_topic(agent.name)
        services = AgentServices(provider=provider)
        for setup in agent.setups:
            setup(services)

    # -- entry point ---------------------------------------------------------------------------

    async def process(self, record: InRecord) -> Processed:
        started = time.perf_counter()
        env: Envelope | None = None
        attempts = 1
        try:
            env = Envelope.from_record(record)
            if len(env.data) > self.settings.max_message_bytes:
                raise MessageTooLarge(
                    f"message of {len(env.data)} bytes exceeds "
                    f"ITINERANT_MAX_MESSAGE_BYTES={self.settings.max_message_bytes}"
                )
            with tracing.envelope_span(self.service, record, env) as span:
                try:
                    recorded = self.store.recorded_outputs(env.id)
                    if recorded is not None:
                        span.set_attribute("itinerant.duplicate", True)
                        result = Processed("duplicate", recorded)
                    else:
                        result, attempts = await self._dispatch(env, record)
                except ItinerantError as exc:  # dead-letter inside the span: same trace, logs
                    result = self._dead_letter(record, env, exc, max(attempts, exc.attempts))
                if result.error is not None:
                    tracing.mark_error(span, result.error.reason, str(result.error))
        except ItinerantError as exc:
            result = self._dead_letter(record, env, exc, max(attempts, exc.attempts))
        except Exception as exc:  # a bug in the runtime itself: still never escape the loop
            log.exception("unexpected failure handling %s@%s", record.topic, record.offset)
            result = self._dead_letter(record, env, HandlerError(repr(exc)), attempts)
        metrics.MESSAGES_PROCESSED.labels(self.service, record.topic, result.outcome).inc()
        metrics.PROCESSING_SECONDS.labels(self.service, record.topic).observe(
            time.perf_counter() - started
        )
        return result

    # -- dispatch ------------------------------------------------------------------------------

    async def _dispatch(self, env: Envelope, record: InRecord) -> tuple[Processed, int]:
        name, version = parse_type(env.type)
        prefix = f"itinerant.{self.service}."
        if not name.startswith(prefix):
            raise UnsupportedVersion(
                f"{self.service} does not handle messages of type {env.type!r}",
                reason="unsupported_type",
            )
        action = name[len(prefix) :]
        if action == COMPENSATE_ACTION:
            return await self._compensate(record, env, version)
        spec = self.agent.handlers.get(action)
        if spec is None:
            raise UnsupportedVersion(
                f"{self.service} has no action {action!r}; it handles "
                f"{sorted(self.agent.handlers)}",
                reason="unknown_action",
            )
        if version not in spec.versions:
            raise UnsupportedVersion(
                f"{self.service}.{action} accepts versions {sorted(spec.versions)}, got v{version}"
            )
        return await self._run_step(env, spec)

    def _own_step(self, slip: Slip) -> tuple[int, Step]:
        if slip.at_end:
            raise InvalidSlip(
                f"slip cursor {slip.next} is out of range for its {len(slip.steps)} steps",
                reason="invalid_slip",
            )
        step = slip.own_step()
        if step.agent != self.service:
            raise InvalidSlip(f"slip cursor points at {step.agent!r}, not at {self.service!r}")
        return slip.next, step

    async def _run_step(self, env: Envelope, spec: HandlerSpec) -> tuple[Processed, int]:
        if env.slip is None:
            raise InvalidSlip("agent messages need a ce_routingslip header", reason="missing_slip")
        slip = env.slip
        step_index, step = self._own_step(slip)
        slip.check_agents(self.settings.agents)
        budget = env.budget or default_budget(self.settings)
        try:
            slip.check_loops()
            budget.check()
        except BudgetExceeded as exc:
            metrics.BUDGET_EXCEEDED.labels(self.service, exc.which).inc()
            return self._stop_saga(env, spec.action, step_index, exc), 1
        except ItinerantError as exc:
            if exc.disposition is Disposition.FAIL_SAGA:
                return self._stop_saga(env, spec.action, step_index, exc), 1
            raise
        payload = self._decode(env, spec.input_model)
        if step.when is not None and not conditions.evaluate(step.when, json.loads(env.data)):
            return await self._attempt(env, spec, slip, budget, step_index, payload, skip=True), 1
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(env, spec, slip, budget, step_index, payload), attempt
            except RetryableError as exc:
                error: ItinerantError = exc
            except ItinerantError as exc:
                if exc.disposition is Disposition.FAIL_SAGA:
                    return self._stop_saga(env, spec.action, step_index, exc), attempt
                raise
            delay = self._retry_delay(attempt, budget, error)
            metrics.RETRIES.labels(self.service, error.reason).inc()
            tracing.retry_event(attempt, error.reason, delay)
            log.warning("retry %d of %s in %.2fs: %s", attempt, env.id, delay, error)
            await asyncio.sleep(delay)

    async def _attempt(
        self,
        env: Envelope,
        spec: HandlerSpec,
        slip: Slip,
        budget: Budget,
        step_index: int,
        payload: BaseModel,
        *,
        skip: bool = False,
    ) -> Processed:
        """One try: handler, outputs and inbox record in one transaction (rolled back on error).
        With ``skip`` (message filter: the step's `when` does not hold) the handler is not run
        and the payload passes on unchanged."""
        started = time.perf_counter()
        with self.store.transaction() as conn:
            ctx = self._context(env, conn, slip, budget)
            result = payload if skip else await self._call(spec, payload, ctx)
            outputs = self._step_outputs(env, spec, ctx, step_index, result, started, skipped=skip)
            seqs = self.store.record(conn, env.id, outputs)
        return Processed("skipped" if skip else "ok", outputs, seqs)

    async def _call(self, spec: HandlerSpec, payload: BaseModel, ctx: HandlerContext) -> BaseModel:
        where = f"{self.service}.{spec.action}"
        try:
            result = await asyncio.wait_for(spec.func(payload, ctx), timeout=spec.timeout_s)
        except TimeoutError as exc:
            raise HandlerTimeout(f"{where} did not finish within {spec.timeout_s}s") from exc
        except ItinerantError:
            raise
        except ValidationError as exc:
            raise HandlerError(
                f"{where} built an invalid model: {validation_problems(exc)}"
            ) from exc
        except Exception as exc:
            raise HandlerError(f"{where} raised {exc!r}") from exc
        if not isinstance(result, spec.output_model):
            raise HandlerError(
                f"{where} returned {type(result).__name__}, not {spec.output_model.__name__}"
            )
        return result

    def _retry_delay(self, attempt: int, budget: Budget, error: ItinerantError) -> float:
        """Full-jitter exponential backoff, bounded by attempts and by the deadline."""
        if attempt >= self.settings.max_attempts:
            raise RetriesExhausted(
                f"gave up after {attempt} attempts: {error.describe()}", attempts=attempt
            ) from error
        cap = min(self.settings.retry_max_delay_s, self.settings.retry_base_delay_s * 2**attempt)
        delay = random.uniform(0, cap)
        if now_utc() + timedelta(seconds=delay) >= budget.deadline:
            raise RetriesExhausted(
                f"the deadline leaves no time for try {attempt + 1}: {error.describe()}",
                attempts=attempt,
            ) from error
        return delay

    def _decode(self, env: Envelope, model: type[BaseModel]) -> BaseModel:
        try:
            return model.model_validate_json(env.data)
        except ValidationError as exc:
            if exc.errors() and exc.errors()[0]["type"] == "json_invalid":
                raise SchemaViolation(
                    f"payload is not valid JSON: {exc.errors()[0]['msg']}", reason="invalid_json"
                ) from exc
            raise SchemaViolation(
                f"payload does not match {model.__name__}: {validation_problems(exc)}"
            ) from exc

    # -- outputs -------------------------------------------------------------------------------

    def _message(
        self, env: Envelope, kind: str, topic: str, ce_type: str, data: bytes, **attrs: Any
    ) -> OutMessage:
        out = Envelope(
            id=derived_id(env.id, self.service, kind),
            type=ce_type,
            source=self.source,
            saga_id=env.saga_id,
            data=data,
            causation_id=env.id,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
            **attrs,
        )
        return self._checked(out.to_message(topic, self.settings.max_slip_bytes), kind)

    def _checked(self, message: OutMessage, kind: str) -> OutMessage:
        """Size-checked, and with a ``send`` span of its own in the saga's trace."""
        if len(message.value) > self.settings.max_message_bytes:
            raise MessageTooLarge(
                f"{self.service} produced a {len(message.value)}-byte {kind} message, over "
                f"ITINERANT_MAX_MESSAGE_BYTES={self.settings.max_message_bytes}"
            )
        saga = message.key.decode(errors="replace") if message.key else None
        return tracing.stamp(message, saga)

    def event(self, env: Envelope, event: StepEvent) -> OutMessage:
        return self._message(
            env,
            f"event:{event.kind.value}",
            self.settings.events_topic,
            event_type(event.kind),
            event.model_dump_json().encode(),
        )

    def _step_event(
        self, env: Envelope, kind: StepEventKind, action: str, step: int, **fields: Any
    ) -> StepEvent:
        return StepEvent(
            kind=kind,
            saga_id=env.saga_id,
            agent=self.service,
            action=action,
            step=step,
            message_id=env.id,
            at=now_utc(),
            **fields,
        )

    def _forward(self, env: Envelope, slip: Slip, budget: Budget, data: bytes) -> list[OutMessage]:
        """Messages for the step at the cursor: one, or one per branch of a parallel group."""
        messages = routing.messages(
            self.settings,
            forward_id=derived_id(env.id, self.service, "forward"),
            causation_id=env.id,
            source=self.source,
            saga_id=env.saga_id,
            slip=slip,
            budget=budget,
            data=data,
            traceparent=env.traceparent,
            tracestate=env.tracestate,
        )
        return [self._checked(m, "forward") for m in messages]

    def _step_outputs(
        self,
        env: Envelope,
        spec: HandlerSpec,
        ctx: HandlerContext,
        step_index: int,
        result: BaseModel,
        started: float,
        *,
        skipped: bool = False,
    ) -> list[OutMessage]:
        """The progress event, then the message(s) to the next step. A branch of a parallel
        group only reports to the coordinator, which joins the branches and moves on."""
        branch = ctx.slip.branch
        if ctx.route is not None and branch is not None:
            raise HandlerError(f"{self.service}.{spec.action} rerouted inside a parallel group")
        slip = ctx.slip if ctx.route is None else ctx.slip.with_remaining(ctx.route)
        slip = slip.advanced(self.service, env.id, now_utc(), skipped=skipped)
        slip.check_agents(self.settings.agents)
        budget = ctx.budget.spent(hops=1, tokens=ctx.tokens, cost_usd=ctx.cost_usd)
        data = result.model_dump_json().encode()
        final = slip.at_end
        reported = final or branch is not None or (spec.side_effects and not skipped)
        event = self._step_event(
            env,
            StepEventKind.COMPLETED,
            spec.action,
            step_index,
            branch=branch,
            final=final,
            skipped=skipped,
            compensable=spec.side_effects
            and not skipped
            and spec.action in self.agent.compensations,
            output=json.loads(data) if reported else None,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            budget=budget,
            slip=slip,
        )
        # The progress event is sent (and acknowledged) before the forward, so the coordinator
        # knows of a side effect before any later step can fail and ask for its compensation.
        outputs = [self.event(env, event)]
        if not final and branch is None:
            outputs += self._forward(env, slip, budget, data)
        return outputs

    def _stop_saga(self, env: Envelope, action: str, step: int, exc: ItinerantError) -> Processed:
        event = self._step_event(
            env, StepEventKind.FAILED, action, step, reason=exc.reason, error=exc.describe()
        )
        outputs = [self.event(env, event)]
        with self.store.transaction() as conn:
            seqs = self.store.record(conn, env.id, outputs)
        return Processed("saga_failed", outputs, seqs, exc)

    def _dead_letter(
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
                dlq_topic=self.settings.dlq_topic,
                attempts=attempts,
                saga_id=saga_id,
            )
        ]
        if env is None and saga_id:
            # Headers too broken to decode, but the saga is known: it must still be parked.
            env = Envelope(
                id=_header_text(record, "ce_id")
                or name_id(record.topic, record.partition, record.offset),
                type="unknown.v1",
                source=self.source,
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
                outputs.append(self.event(env, event))
        with self.store.transaction() as conn:
            seqs = self.store.record(conn, None, outputs)
        return Processed("dead_lettered", outputs, seqs, exc)

    # -- compensation --------------------------------------------------------------------------

    async def _compensate(
        self, record: InRecord, env: Envelope, version: int
    ) -> tuple[Processed, int]:
        if version != 1:
            raise UnsupportedVersion(f"compensate accepts v1, got v{version}")
        command = CompensateCommand.model_validate(self._decode(env, CompensateCommand))
        budget = env.budget or default_budget(self.settings)
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._undo(env, command), attempt
            except RetryableError as exc:
                error: ItinerantError = exc
            except ItinerantError as exc:
                return self._compensation_failed(record, env, command, exc, attempt), attempt
            try:
                delay = self._retry_delay(attempt, budget, error)
            except RetriesExhausted as exhausted:
                return self._compensation_failed(record, env, command, exhausted, attempt), attempt
            metrics.RETRIES.labels(self.service, error.reason).inc()
            tracing.retry_event(attempt, error.reason, delay)
            await asyncio.sleep(delay)

    async def _undo(self, env: Envelope, command: CompensateCommand) -> Processed:
        spec = self.agent.handlers.get(command.action)
        if spec is None:
            raise UnsupportedVersion(
                f"{self.service} has no action {command.action!r} to compensate; it handles "
                f"{sorted(self.agent.handlers)}",
                reason="unknown_action",
            )
        undo = self.agent.compensations.get(command.action)  # None: nothing to undo
        with self.store.transaction() as conn:
            if undo is not None and spec is not None:
                try:
                    output = spec.output_model.model_validate(command.output)
                except ValidationError as exc:
                    raise SchemaViolation(
                        f"recorded output of {command.action} does not match: "
                        f"{validation_problems(exc)}"
                    ) from exc
                ctx = self._context(
                    env, conn, env.slip or _empty_slip(), default_budget(self.settings)
                )
                compensation = _AsHandler(undo)
                await self._call(
                    HandlerSpec(
                        command.action,
                        compensation,
                        spec.output_model,
                        _Done,
                        True,
                        frozenset({1}),
                        spec.timeout_s,
                    ),
                    output,
                    ctx,
                )
            event = self._step_event(
                env,
                StepEventKind.COMPENSATED,
                command.action,
                command.step,
                branch=command.branch,
                reason=command.reason,
            )
            outputs = [self.event(env, event)]
            seqs = self.store.record(conn, env.id, outputs)
        return Processed("compensated", outputs, seqs)

    def _compensation_failed(
        self,
        record: InRecord,
        env: Envelope,
        command: CompensateCommand,
        error: ItinerantError,
        attempts: int,
    ) -> Processed:
        """Dead-letter the compensate command (an operator can replay it) and tell the saga."""
        return self._dead_letter(
            record,
            env,
            error,
            attempts,
            kind=StepEventKind.COMPENSATION_FAILED,
            action=command.action,
            step=command.step,
            branch=command.branch,
        )

    def _context(self, env: Envelope, conn: Any, slip: Slip, budget: Budget) -> HandlerContext:
        return HandlerContext(
            service=self.service,
            saga_id=env.saga_id,
            message_id=env.id,
            db=conn,
            provider=self.provider,
            budget=budget,
            slip=slip,
            log=logging.LoggerAdapter(
                logging.getLogger(f"itinerant.{self.service}"),
                {"saga_id": env.saga_id, "message_id": env.id},
            ),
            settings=self.settings,
        )


class HandlerTimeout(RetryableError):
    reason = "handler_timeout"
    hint = "the handler hung past its timeout; it is retried, then dead-lettered"


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


def _empty_slip() -> Slip:
    return Slip(steps=[Step(agent="coordinator")], next=0)


class _Done(BaseModel):
    """What a compensation returns: nothing but the fact that it finished."""


class _AsHandler:
    """Adapts a compensation (returns None) to the handler call path (timeouts, error classes)."""

    def __init__(self, undo: Any) -> None:
        self._undo = undo

    async def __call__(self, output: BaseModel, ctx: HandlerContext) -> BaseModel:
        await self._undo(output, ctx)
        return _Done()
