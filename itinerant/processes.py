"""Which code runs each service process of a mesh: the coordinator, one agent, or every agent
sharing one process (``ITINERANT_LAYOUT=shared``)."""

from __future__ import annotations

from itinerant.coordinator.app import coordinator_worker
from itinerant.mesh import Mesh
from itinerant.runtime.agent_service import SHARED_WORKER, agent_worker, shared_worker
from itinerant.runtime.worker import Worker
from itinerant.settings import Settings


def build_worker(service: str, settings: Settings, mesh: Mesh) -> Worker:
    settings = mesh.bind(settings)
    if service == "coordinator":
        return coordinator_worker(settings, mesh)
    if service == SHARED_WORKER:
        return shared_worker([mesh.agent(name) for name in settings.agents], settings)
    return agent_worker(mesh.agent(service), settings)
