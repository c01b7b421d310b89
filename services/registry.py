"""Which code runs each service. The runtime knows no agent; this module knows them all."""

from __future__ import annotations

import importlib

from itinerant.runtime.agent import Agent
from itinerant.runtime.worker import Worker
from itinerant.settings import Settings

AGENT_MODULES = {
    "planner": "services.planner.agent",
    "flights": "services.flights.agent",
    "hotels": "services.hotels.agent",
    "validator": "services.validator.agent",
    "notifier": "services.notifier.agent",
    "probe": "services.probe.agent",  # diagnostic; runs only when listed in ITINERANT_AGENTS
}


def load_agent(name: str) -> Agent:
    module = AGENT_MODULES.get(name)
    if module is None:
        raise KeyError(f"no agent named {name!r}; agents: {sorted(AGENT_MODULES)}")
    agent = importlib.import_module(module).agent
    assert isinstance(agent, Agent)
    return agent


def build_worker(service: str, settings: Settings) -> Worker:
    if service == "coordinator":
        from itinerant.coordinator.app import coordinator_worker

        return coordinator_worker(settings)
    from itinerant.runtime.agent_service import SHARED_WORKER, agent_worker, shared_worker

    if service == SHARED_WORKER:
        return shared_worker([load_agent(name) for name in settings.agents], settings)
    return agent_worker(load_agent(service), settings)
