"""The per-message pipeline of an agent service, independent of Kafka and Faust.

``Processor.process(record)`` decodes, dedups, checks the slip and the budget, runs the handler
(with retries), and records the outputs in the state store in the same transaction as the
handler's own changes. It returns what must be sent; ``Service`` sends it and only then lets the
consumer move on. A failure of any kind becomes data (an event or a dead letter), never an
exception that would escape the consumer loop (see docs/architecture.md#the-per-message-pipeline).

This module is the pipeline and its retry policy; one try is :mod:`.attempts`, the messages a
step sends :mod:`.outputs`, what failures become :mod:`.failures`, undoing a step
:mod:`.compensation`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from datetime import timedelta

from itinerant.errors import (
    BudgetExceeded,
    Disposition,
    HandledElsewhere,
    HandlerError,
    InvalidSlip,
    ItinerantError,
    MessageTooLarge,
    RetriesExhausted,
    RetryableError,
    Unauthenticated,
    UnsupportedVersion,
)
from itinerant.observability import metrics, tracing
from itinerant.runtime.agent import Agent, AgentServices, HandlerSpec
from itinerant.runtime.attempts import HandlerAttempts, HandlerTimeout, decode, default_budget
from itinerant.runtime.compensation import Compensations
from itinerant.runtime.failures import Failures
from itinerant.runtime.llm import LLMProvider
from itinerant.runtime.outcome import Processed
from itinerant.runtime.outputs import StepOutputs
from itinerant.runtime.store import StateStore
from itinerant.security.signing import mesh_keys, require_signing_key
from itinerant.settings import Settings
from itinerant.wire import conditions
from itinerant.wire.bounds import InputBounds
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, InRecord, now_utc, parse_type
from itinerant.wire.events import COMPENSATE_ACTION, CompensateCommand
from itinerant.wire.slip import Slip, Step

__all__ = ["HandlerTimeout", "Processed", "Processor", "default_budget"]

log = logging.getLogger(__name__)


class Processor:
    """Runs one agent's handlers on records of its topic."""

    def __init__(
        self, agent: Agent, settings: Settings, store: StateStore, provider: LLMProvider
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.store = store
        self.provider = provider
        self.service = agent.name
        self.source = f"/itinerant/{agent.name}"
        self.topic = settings.agent_topic(agent.name)
        self.keys = mesh_keys(settings)
        self.bounds = InputBounds.of(settings)
        require_signing_key(settings, agent.name)
        self.senders = frozenset(settings.service_names())
        self.outputs = StepOutputs(agent, settings)
        self.failures = Failures(self.outputs, store)
        self.attempts = HandlerAttempts(agent, settings, store, provider, self.outputs)
        self.compensations = Compensations(
            agent, settings, store, self.attempts, self.outputs, self.failures
        )
        services = AgentServices(provider=provider)
        for setup in agent.setups:
            setup(services)

    # -- entry point ---------------------------------------------------------------------------

    async def process(self, record: InRecord) -> Processed:
        started = time.perf_counter()
        env: Envelope | None = None
        attempts = 1
        dead_letter = self.failures.dead_letter
        try:
            env = Envelope.from_record(record, self.bounds)
            env = env.evolve(signer=self._sender(record))
            if len(env.data) > self.settings.max_message_bytes:
                raise MessageTooLarge(
                    f"message of {len(env.data)} bytes exceeds "
                    f"ITINERANT_MAX_MESSAGE_BYTES={self.settings.max_message_bytes}"
                )
            with tracing.envelope_span(self.service, record, env) as span:
                try:
                    recorded = self.store.recorded_outputs(env.inbox_key)
                    if recorded is not None:
                        span.set_attribute("itinerant.duplicate", True)
                        result = Processed("duplicate", recorded)
                    else:
                        result, attempts = await self._dispatch(env, record)
                except HandledElsewhere:  # another replica recorded it first: its outputs
                    span.set_attribute("itinerant.duplicate", True)
                    result = Processed(
                        "duplicate", self.store.recorded_outputs(env.inbox_key) or []
                    )
                except ItinerantError as exc:  # dead-letter inside the span: same trace, logs
                    result = dead_letter(record, env, exc, max(attempts, exc.attempts))
                if result.error is not None:
                    tracing.mark_error(span, result.error.reason, str(result.error))
        except ItinerantError as exc:
            result = dead_letter(record, env, exc, max(attempts, exc.attempts))
        except Exception as exc:  # a bug in the runtime itself: still never escape the loop
            log.exception("unexpected failure handling %s@%s", record.topic, record.offset)
            result = dead_letter(record, env, HandlerError(repr(exc)), attempts)
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

    def _sender(self, record: InRecord) -> str:
        """The verified service that sent ``record``: only the mesh's services send to agents
        (a caller's request enters through the coordinator)."""
        signer = self.keys.verify(record)
        if self.keys.required and signer not in self.senders:
            raise Unauthenticated(
                f"{signer!r} is not a service of this mesh and may not send to {self.service}"
            )
        return signer

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

    # -- a step, with retries ------------------------------------------------------------------

    async def _run_step(self, env: Envelope, spec: HandlerSpec) -> tuple[Processed, int]:
        if env.slip is None:
            raise InvalidSlip("agent messages need a ce_routingslip header", reason="missing_slip")
        slip = env.slip
        step_index, step = self._own_step(slip)
        slip.check_agents(self.settings.agents)
        if env.budget is None:
            raise InvalidSlip("agent messages need a ce_budget header", reason="missing_budget")
        budget = env.budget
        if spec.side_effects or spec.requires:
            # A step with effects believes the route only when every visit is signed by the
            # service that made it and the steps it requires really ran.
            self.keys.verify_visits(env.saga_id, slip, spec.requires)
        stop_saga = self.failures.stop_saga
        try:
            slip.check_loops()
            budget.check()
        except BudgetExceeded as exc:
            metrics.BUDGET_EXCEEDED.labels(self.service, exc.which).inc()
            return stop_saga(env, spec.action, step_index, exc), 1
        except ItinerantError as exc:
            if exc.disposition is Disposition.FAIL_SAGA:
                return stop_saga(env, spec.action, step_index, exc), 1
            raise
        payload = decode(env, spec.input_model)
        attempt_once = self.attempts.attempt
        if step.when is not None and not conditions.evaluate(step.when, json.loads(env.data)):
            return await attempt_once(env, spec, slip, budget, step_index, payload, skip=True), 1
        attempt = 0
        while True:
            attempt += 1
            try:
                return await attempt_once(env, spec, slip, budget, step_index, payload), attempt
            except RetryableError as exc:
                error: ItinerantError = exc
            except ItinerantError as exc:
                if exc.disposition is Disposition.FAIL_SAGA:
                    return stop_saga(env, spec.action, step_index, exc), attempt
                raise
            delay = self._retry_delay(attempt, budget, error)
            metrics.RETRIES.labels(self.service, error.reason).inc()
            tracing.retry_event(attempt, error.reason, delay)
            log.warning("retry %d of %s in %.2fs: %s", attempt, env.id, delay, error)
            await asyncio.sleep(delay)

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

    # -- a compensation, with retries ----------------------------------------------------------

    async def _compensate(
        self, record: InRecord, env: Envelope, version: int
    ) -> tuple[Processed, int]:
        if version != 1:
            raise UnsupportedVersion(f"compensate accepts v1, got v{version}")
        command = CompensateCommand.model_validate(decode(env, CompensateCommand))
        budget = env.budget or default_budget(self.settings)
        compensations = self.compensations
        attempt = 0
        while True:
            attempt += 1
            try:
                return await compensations.undo(env, command), attempt
            except RetryableError as exc:
                error: ItinerantError = exc
            except HandledElsewhere:
                raise
            except ItinerantError as exc:
                return compensations.failed(record, env, command, exc, attempt), attempt
            try:
                delay = self._retry_delay(attempt, budget, error)
            except RetriesExhausted as exhausted:
                return compensations.failed(record, env, command, exhausted, attempt), attempt
            metrics.RETRIES.labels(self.service, error.reason).inc()
            tracing.retry_event(attempt, error.reason, delay)
            await asyncio.sleep(delay)
