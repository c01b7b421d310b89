"""Test helpers: ``run_handler`` runs one handler alone (a real context, a temporary store, the
runtime's input and output checks); ``InMemoryMesh`` runs a whole mesh in process (the real
processors and coordinator, records routed by topic instead of through Kafka). Integration tests
run the same scenarios on a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import typing
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from itinerant.coordinator import repository
from itinerant.coordinator.saga import Saga
from itinerant.coordinator.service import Coordinator
from itinerant.errors import (
    HandlerError,
    ItinerantError,
    SchemaViolation,
    UnsupportedVersion,
    validation_problems,
)
from itinerant.mesh import Mesh, load_mesh
from itinerant.runtime.agent import Agent, AgentServices, HandlerContext
from itinerant.runtime.llm import DeterministicProvider, LLMProvider
from itinerant.runtime.processor import HandlerTimeout, Processed, Processor, default_budget
from itinerant.runtime.providers import make_provider
from itinerant.runtime.state import open_store
from itinerant.runtime.store import StateStore
from itinerant.security.keys import ensure_local_keys, keys_dir
from itinerant.security.local import prepare_keys
from itinerant.security.signing import mesh_keys, source_principal, visit_signer
from itinerant.settings import Settings
from itinerant.wire.budget import Budget
from itinerant.wire.envelope import Envelope, InRecord, OutMessage, replace_headers
from itinerant.wire.ids import new_id
from itinerant.wire.request import Request
from itinerant.wire.slip import Slip, SlipStep, Step, Visit

__all__ = ["HandlerResult", "InMemoryMesh", "run_handler"]

M = typing.TypeVar("M", bound=BaseModel)


@dataclass
class HandlerResult:
    """What one handler call did: its output, the route it chose (``ctx.reroute`` or
    ``ctx.follow``; None: the slip goes on as it is), what it spent, and its agent's store
    (``db``, committed) for the test to inspect."""

    output: BaseModel
    route: list[SlipStep] | None
    tokens: int
    cost_usd: float
    store: StateStore
    context: HandlerContext

    @property
    def db(self) -> Any:
        """The agent's database (``Database``: SQLite's connection, or PostgreSQL's adapter)."""
        return self.store.connection

    def output_as(self, model: type[M]) -> M:
        """The output, typed: ``result.output_as(Greeting).text``."""
        if not isinstance(self.output, model):
            raise TypeError(f"the output is a {type(self.output).__name__}, not {model.__name__}")
        return self.output


async def run_handler(
    agent: Agent,
    action: str,
    payload: BaseModel | dict[str, Any] | str | bytes,
    *,
    settings: Settings | None = None,
    provider: LLMProvider | None = None,
    slip: Slip | None = None,
    budget: Budget | None = None,
    customer: str = "anonymous",
) -> HandlerResult:
    """Run ``agent``'s ``action`` handler once, as the runtime would, without a broker.

    The payload goes through JSON and the handler's input model (a mismatch raises
    :class:`SchemaViolation`, as the runtime dead-letters it); the handler runs in a transaction
    of the agent's store (its migrations applied; ``settings.data_dir``/state/<agent>.db, so calls
    with the same settings share state; a fresh temporary directory without settings), with the
    agent's ``on_start`` setups run on ``provider`` (default: a :class:`DeterministicProvider`),
    ``budget`` (default: the settings' defaults) and ``slip`` (default: this one step). The
    handler's own errors are raised as they are (its changes rolled back); a wrong return type
    raises :class:`HandlerError` and a hang past its timeout :class:`HandlerTimeout`, as in the
    runtime. A step's ``when`` filter is not evaluated: the handler always runs."""
    spec = agent.handlers.get(action)
    if spec is None:
        raise UnsupportedVersion(
            f"{agent.name} has no action {action!r}; it handles {sorted(agent.handlers)}",
            reason="unknown_action",
        )
    if settings is None:
        home = Path(tempfile.mkdtemp(prefix=f"itinerant-{agent.name}-"))
        settings = Settings(data_dir=home, metrics_port_base=0)
    provider = provider or DeterministicProvider()
    for setup in agent.setups:
        setup(AgentServices(provider=provider))
    if isinstance(payload, BaseModel):
        raw: str | bytes = payload.model_dump_json()
    elif isinstance(payload, dict):
        raw = json.dumps(payload)
    else:
        raw = payload
    try:
        model = spec.input_model.model_validate_json(raw)
    except ValidationError as exc:
        raise SchemaViolation(
            f"payload does not match {spec.input_model.__name__}: {validation_problems(exc)}"
        ) from exc
    slip = slip or Slip(steps=[Step(agent=agent.name, action=action)])
    message_id = new_id()
    store = open_store(settings, agent.name, agent.migrations)
    where = f"{agent.name}.{action}"
    with store.transaction() as conn:
        ctx = HandlerContext(
            service=agent.name,
            saga_id=new_id(),
            message_id=message_id,
            db=conn,
            provider=provider,
            budget=budget or default_budget(settings),
            slip=slip,
            log=logging.LoggerAdapter(logging.getLogger(f"itinerant.{agent.name}"), {}),
            settings=settings,
            customer=customer,
            tools=agent.tool_client(settings),
        )
        try:
            output = await asyncio.wait_for(spec.func(model, ctx), timeout=spec.timeout_s)
        except TimeoutError as exc:
            raise HandlerTimeout(f"{where} did not finish within {spec.timeout_s}s") from exc
        if not isinstance(output, spec.output_model):
            raise HandlerError(
                f"{where} returned {type(output).__name__}, not {spec.output_model.__name__}"
            )
        if ctx.route is not None and slip.branch is not None:
            raise HandlerError(f"{where} rerouted inside a parallel group")
        output.model_dump_json()  # what the runtime sends on: it must serialise
    return HandlerResult(output, ctx.route, ctx.tokens, ctx.cost_usd, store, ctx)


@dataclass
class InMemoryMesh:
    """A mesh's agents and coordinator wired together in process. ``mesh`` is a :class:`Mesh`
    of agent objects (default: the one ``settings.app`` names); ``provider`` replaces every
    agent's LLM provider."""

    settings: Settings
    mesh: Mesh | None = None
    provider: LLMProvider | None = None
    log: dict[str, list[OutMessage]] = field(default_factory=dict)
    queue: deque[OutMessage] = field(default_factory=deque)
    processors: dict[str, Processor] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    stores: dict[str, StateStore] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mesh is None:
            self.mesh = load_mesh(self.settings.app)
        self.settings = self.mesh.bind(self.settings)
        prepare_keys(self.settings, self.settings.service_names())
        coordinator_store = open_store(self.settings, "coordinator", (repository.SAGAS,))
        self.stores["coordinator"] = coordinator_store
        self.coordinator = Coordinator(self.settings, coordinator_store, self.mesh)
        for name in self.settings.agents:
            agent = self.mesh.agent(name)
            store = open_store(self.settings, name, agent.migrations)
            self.stores[name] = store
            provider = self.provider or make_provider(self.settings, name)
            self.processors[self.settings.agent_topic(name)] = Processor(
                agent, self.settings, store, provider
            )

    # -- publishing ----------------------------------------------------------------------------

    def signed(self, message: OutMessage, principal: str | None = None) -> OutMessage:
        """``message`` signed as ``principal`` (default: the service its ``ce_source`` names):
        what a crafted test message needs to get past authentication to the check it tests."""
        return signed(self.settings, message, principal)

    def publish(self, message: OutMessage) -> None:
        self.queue.append(message)

    def publish_request(
        self, request: Request | dict[str, Any] | bytes, *, principal: str | None = None
    ) -> str:
        """Publish a request: bare (anonymous), or signed by ``principal`` (its customer)."""
        if isinstance(request, Request):
            saga_id = request.request_id or new_id()
            body = request.model_copy(update={"request_id": saga_id}).model_dump_json().encode()
        elif isinstance(request, dict):
            saga_id = str(request.get("request_id") or new_id())
            body = json.dumps({**request, "request_id": saga_id}).encode()
        else:
            saga_id, body = "", request
        message = OutMessage(self.settings.requests_topic, None, body, [])
        if principal is not None:
            message = self.signed(
                Envelope(
                    id=new_id(),
                    type="itinerant.request.v1",
                    source=f"/clients/{principal}",
                    saga_id=saga_id or new_id(),
                    data=body,
                ).to_message(self.settings.requests_topic),
                principal,
            )
        self.publish(message)
        return saga_id

    # -- running -------------------------------------------------------------------------------

    async def run(self, max_steps: int = 10_000) -> int:
        """Deliver queued messages (and their consequences) until nothing is left."""
        steps = 0
        while self.queue and steps < max_steps:
            message = self.queue.popleft()
            steps += 1
            await self.deliver(message)
        return steps

    async def deliver(self, message: OutMessage) -> Processed | None:
        offset = self.offsets.get(message.topic, 0)
        self.offsets[message.topic] = offset + 1
        self.log.setdefault(message.topic, []).append(message)
        record = InRecord(message.topic, 0, offset, message.key, message.value, message.headers)
        processed: Processed | None
        if message.topic == self.settings.requests_topic:
            processed = await self.coordinator.handle_request(record)
        elif message.topic == self.settings.events_topic:
            processed = await self.coordinator.handle_event(record)
        elif message.topic in self.processors:
            processed = await self.processors[message.topic].process(record)
        else:
            processed = None  # results, dlq: sinks
        if processed is not None:
            self.queue.extend(processed.outputs)
            self.stores[_owner(self, message.topic)].mark_sent(processed.outbox_seqs)
        return processed

    async def tick(self) -> None:
        for processed in await self.coordinator.tick():
            self.queue.extend(processed.outputs)

    # -- reading -------------------------------------------------------------------------------

    def results(self) -> dict[str, dict[str, Any]]:
        return {
            (m.key or b"").decode(): json.loads(m.value)
            for m in self.log.get(self.settings.results_topic, [])
        }

    def dead_letters(self) -> list[OutMessage]:
        return list(self.log.get(self.settings.dlq_topic, []))

    def saga(self, saga_id: str) -> Saga | None:
        return repository.load(self.stores["coordinator"].connection, saga_id)

    def envelopes(self, topic: str) -> list[Envelope]:
        out = []
        for m in self.log.get(topic, []):
            out.append(Envelope.from_record(InRecord(topic, 0, 0, m.key, m.value, m.headers)))
        return out


def _owner(mesh: InMemoryMesh, topic: str) -> str:
    if topic in (mesh.settings.requests_topic, mesh.settings.events_topic):
        return "coordinator"
    return topic.rsplit(".", 1)[-1]


def signed(settings: Settings, message: OutMessage, principal: str | None = None) -> OutMessage:
    """``message`` signed as ``principal`` (default: the one its ``ce_source`` names), with the
    local keys under ``settings``' data directory generated when missing."""
    source = (message.header("ce_source") or b"").decode(errors="replace")
    principal = principal or source_principal(source) or "coordinator"
    ensure_local_keys(keys_dir(settings), [principal])
    keys = mesh_keys(settings)
    raw_slip = message.header("ce_routingslip")
    saga_raw = message.header("ce_sagaid")
    try:
        slip = Slip.decode(raw_slip) if raw_slip and saga_raw and keys.required else None
    except ItinerantError:
        slip = None  # a crafted broken slip: sign the message as it is
    if slip is not None and saga_raw is not None and any(v.sig is None for v in slip.visited):
        # Crafted visits get signed by the services they name, chained, as if they ran.
        visits: list[Visit] = []
        for index, visit in enumerate(slip.visited):
            if visit.step is None:
                visit = visit.model_copy(update={"step": index})
            if visit.sig is None:
                ensure_local_keys(keys_dir(settings), [visit_signer(visit)])
                visit = keys.sign_visit(saga_raw.decode(errors="replace"), visits, visit)
            visits.append(visit)
        slip = slip.model_copy(update={"visited": visits})
        with contextlib.suppress(ItinerantError):  # crafted messages may be of any size
            headers = replace_headers(message.headers, [("ce_routingslip", slip.encode(2**24))])
            message = OutMessage(message.topic, message.key, message.value, headers)
    return keys.sign(message, principal)


def signed_record(
    settings: Settings,
    message: OutMessage,
    principal: str | None = None,
    *,
    partition: int = 0,
    offset: int = 0,
) -> InRecord:
    """A consumed record of ``message``, signed (see :func:`signed`)."""
    message = signed(settings, message, principal)
    return InRecord(
        message.topic, partition, offset, message.key, message.value, list(message.headers)
    )
