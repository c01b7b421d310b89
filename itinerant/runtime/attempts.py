"""One try of a step: its payload decoded, the handler called with its context within its
timeout (every failure classified), and the outputs recorded in the same transaction as the
handler's own changes, or rolled back with them (see docs/architecture.md#delivery-guarantees).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from itinerant.errors import (
    HandlerError,
    ItinerantError,
    RetryableError,
    SchemaViolation,
    validation_problems,
)
from itinerant.runtime.agent import Agent, HandlerContext, HandlerSpec
from itinerant.runtime.llm import LLMProvider
from itinerant.runtime.outcome import Processed
from itinerant.runtime.outputs import StepOutputs
from itinerant.runtime.store import StateStore
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, now_utc
from itinerant.wire.slip import Slip


class HandlerTimeout(RetryableError):
    reason = "handler_timeout"
    hint = "the handler hung past its timeout; it is retried, then dead-lettered"


def default_budget(settings: Settings, now: datetime | None = None) -> Budget:
    """The budget of a message that carries none: the settings' defaults, from now."""
    now = now or now_utc()
    return Budget(
        max_hops=settings.default_max_hops,
        deadline=now + timedelta(seconds=settings.default_deadline_s),
        max_tokens=settings.default_max_tokens,
        max_cost_usd=settings.default_max_cost_usd,
        max_tool_calls=settings.default_max_tool_calls,
    )


def decode(env: Envelope, model: type[BaseModel]) -> BaseModel:
    """The payload as ``model``; a :class:`SchemaViolation` that says what is wrong if not."""
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


class HandlerAttempts:
    """Tries one agent's handlers, one try at a time."""

    def __init__(
        self,
        agent: Agent,
        settings: Settings,
        store: StateStore,
        provider: LLMProvider,
        outputs: StepOutputs,
    ) -> None:
        self.settings = settings
        self.store = store
        self.provider = provider
        self.outputs = outputs
        self.service = agent.name
        self.tools = agent.tool_client(settings)

    async def attempt(
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
            ctx = self.context(env, conn, slip, budget)
            result = payload if skip else await self.call(spec, payload, ctx)
            outputs = self.outputs.after_step(
                env, spec, ctx, step_index, result, started, skipped=skip
            )
            seqs = self.store.record(conn, env.inbox_key, outputs)
        return Processed("skipped" if skip else "ok", outputs, seqs)

    async def call(self, spec: HandlerSpec, payload: BaseModel, ctx: HandlerContext) -> BaseModel:
        where = f"{self.service}.{spec.action}"
        try:
            # asyncio.timeout, not wait_for: no task per call (docs/benchmarks.md#the-hot-path).
            async with asyncio.timeout(spec.timeout_s):
                result = await spec.func(payload, ctx)
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

    def context(self, env: Envelope, conn: Any, slip: Slip, budget: Budget) -> HandlerContext:
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
            customer=env.customer or "anonymous",
            tools=self.tools,
        )
