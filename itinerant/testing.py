"""An in-memory mesh for fast tests: the real processors and coordinator, records routed by topic
in process instead of through Kafka. Integration tests run the same scenarios on a real broker."""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from itinerant.coordinator import repository
from itinerant.coordinator.saga import Saga
from itinerant.coordinator.service import Coordinator
from itinerant.mesh import Mesh, load_mesh
from itinerant.runtime.llm import LLMProvider
from itinerant.runtime.processor import Processed, Processor
from itinerant.runtime.providers import make_provider
from itinerant.runtime.store import Store
from itinerant.settings import Settings
from itinerant.wire.envelope import Envelope, InRecord, OutMessage
from itinerant.wire.ids import new_id
from itinerant.wire.request import Request


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
    stores: dict[str, Store] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mesh is None:
            self.mesh = load_mesh(self.settings.app)
        self.settings = self.mesh.bind(self.settings)
        state = Path(self.settings.data_dir) / "state"
        self.stores["coordinator"] = Store(state / "coordinator.db", (repository.SAGAS,))
        self.coordinator = Coordinator(self.settings, self.stores["coordinator"], self.mesh)
        for name in self.settings.agents:
            agent = self.mesh.agent(name)
            store = Store(state / f"{name}.db", agent.migrations)
            self.stores[name] = store
            provider = self.provider or make_provider(self.settings, name)
            self.processors[self.settings.agent_topic(name)] = Processor(
                agent, self.settings, store, provider
            )

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, message: OutMessage) -> None:
        self.queue.append(message)

    def publish_request(self, request: Request | dict[str, Any] | bytes) -> str:
        if isinstance(request, Request):
            saga_id = request.request_id or new_id()
            body = request.model_copy(update={"request_id": saga_id}).model_dump_json().encode()
        elif isinstance(request, dict):
            saga_id = str(request.get("request_id") or new_id())
            body = json.dumps({**request, "request_id": saga_id}).encode()
        else:
            saga_id, body = "", request
        self.publish(OutMessage(self.settings.requests_topic, None, body, []))
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
