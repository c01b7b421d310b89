"""Probe: a diagnostic agent for exercising routing patterns on a real broker.

Run it by listing it in ``ITINERANT_AGENTS`` and pointing ``ITINERANT_ENTRY_STEP`` at
``probe.plan``. Its ``plan`` action takes the route from the request's ``text`` (JSON:
``{"route": [...slip steps...], "delay_ms": 2000}``); ``fast`` and ``slow`` (which waits
``delay_ms``) record a side effect that ``compensation`` cancels; ``fail`` is a business failure.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

from itinerant.errors import BusinessFailure
from itinerant.runtime.agent import Agent, HandlerContext
from itinerant.wire.slip import SlipStep

EFFECTS = """
CREATE TABLE IF NOT EXISTS probe_effects (
    idempotency_key TEXT PRIMARY KEY,
    saga_id         TEXT NOT NULL,
    action          TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'held'
);
"""

agent = Agent("probe", "Diagnostic agent for routing tests.", migrations=(EFFECTS,))


class ProbeDoc(BaseModel):
    model_config = ConfigDict(extra="allow")

    request: dict[str, Any]
    delay_ms: int = 0
    fast: str | None = None
    slow: str | None = None


_ROUTE = TypeAdapter(list[SlipStep])


@agent.handler("plan")
async def plan(doc: ProbeDoc, ctx: HandlerContext) -> ProbeDoc:
    spec = json.loads(doc.request.get("text") or "{}")
    ctx.reroute(_ROUTE.validate_python(spec.get("route", [])))
    return doc.model_copy(update={"delay_ms": int(spec.get("delay_ms", 0))})


@agent.handler("fast", side_effects=True)
async def fast(doc: ProbeDoc, ctx: HandlerContext) -> ProbeDoc:
    _hold(ctx, "fast")
    return doc.model_copy(update={"fast": ctx.idempotency_key})


@agent.handler("slow", side_effects=True, timeout_s=60)
async def slow(doc: ProbeDoc, ctx: HandlerContext) -> ProbeDoc:
    await asyncio.sleep(doc.delay_ms / 1000)
    _hold(ctx, "slow")
    return doc.model_copy(update={"slow": ctx.idempotency_key})


@agent.handler("fail")
async def fail(doc: ProbeDoc, ctx: HandlerContext) -> ProbeDoc:
    raise BusinessFailure("the probe was asked to fail", reason="probe_failed")


@agent.compensation("fast")
async def undo_fast(doc: ProbeDoc, ctx: HandlerContext) -> None:
    _cancel(ctx, doc.fast)


@agent.compensation("slow")
async def undo_slow(doc: ProbeDoc, ctx: HandlerContext) -> None:
    _cancel(ctx, doc.slow)


def _hold(ctx: HandlerContext, action: str) -> None:
    ctx.db.execute(
        "INSERT INTO probe_effects(idempotency_key, saga_id, action) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (ctx.idempotency_key, ctx.saga_id, action),
    )


def _cancel(ctx: HandlerContext, key: str | None) -> None:
    if key:
        ctx.db.execute(
            "UPDATE probe_effects SET status = 'cancelled' WHERE idempotency_key = ?", (key,)
        )
