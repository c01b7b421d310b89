"""Compensation on the agent side: one try at undoing a step, given its recorded output.

The coordinator sends ``itinerant.<agent>.compensate.v1``; the agent's compensation for the
action runs in the handler call path (timeout, error classes) and ``step_compensated`` is
reported. An action without a compensation has nothing to undo. A compensation that cannot
finish is dead-lettered, so an operator can replay it (see docs/architecture.md#compensation).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from itinerant.errors import (
    ItinerantError,
    SchemaViolation,
    UnsupportedVersion,
    validation_problems,
)
from itinerant.runtime.agent import Agent, HandlerContext, HandlerSpec
from itinerant.runtime.attempts import HandlerAttempts, default_budget
from itinerant.runtime.failures import Failures
from itinerant.runtime.outcome import Processed
from itinerant.runtime.outputs import StepOutputs
from itinerant.runtime.store import StateStore
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope, InRecord
from itinerant.wire.events import CompensateCommand, StepEventKind
from itinerant.wire.slip import Slip, Step


class Compensations:
    """Runs one agent's compensations."""

    def __init__(
        self,
        agent: Agent,
        settings: Settings,
        store: StateStore,
        attempts: HandlerAttempts,
        outputs: StepOutputs,
        failures: Failures,
    ) -> None:
        self.agent = agent
        self.settings = settings
        self.store = store
        self.attempts = attempts
        self.outputs = outputs
        self.failures = failures
        self.service = agent.name

    async def undo(self, env: Envelope, command: CompensateCommand) -> Processed:
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
                ctx = self.attempts.context(
                    env, conn, env.slip or _empty_slip(), default_budget(self.settings)
                )
                compensation = _AsHandler(undo)
                await self.attempts.call(
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
            event = self.outputs.step_event(
                env,
                StepEventKind.COMPENSATED,
                command.action,
                command.step,
                branch=command.branch,
                reason=command.reason,
            )
            outputs = [self.outputs.event(env, event)]
            seqs = self.store.record(conn, env.inbox_key, outputs)
        return Processed("compensated", outputs, seqs)

    def failed(
        self,
        record: InRecord,
        env: Envelope,
        command: CompensateCommand,
        error: ItinerantError,
        attempts: int,
    ) -> Processed:
        """Dead-letter the compensate command (an operator can replay it) and tell the saga."""
        return self.failures.dead_letter(
            record,
            env,
            error,
            attempts,
            kind=StepEventKind.COMPENSATION_FAILED,
            action=command.action,
            step=command.step,
            branch=command.branch,
        )


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
