"""Build the worker process of one agent, or of several agents sharing one process."""

from __future__ import annotations

from itinerant.runtime.agent import Agent
from itinerant.runtime.processor import Processor
from itinerant.runtime.providers import make_provider
from itinerant.runtime.state import open_store
from itinerant.runtime.worker import Subscription, Worker
from itinerant.settings import Settings

SHARED_WORKER = "agents"


def agent_subscription(agent: Agent, settings: Settings) -> Subscription:
    store = open_store(settings, agent.name, agent.migrations)
    processor = Processor(agent, settings, store, make_provider(settings, agent.name))
    return Subscription(settings.agent_topic(agent.name), processor.process, store)


def agent_worker(agent: Agent, settings: Settings) -> Worker:
    """One agent, one process, one consumer group (``itinerant-<agent>``)."""
    subscription = agent_subscription(agent, settings)
    assert subscription.store is not None
    return Worker(
        service=agent.name,
        settings=settings,
        store=subscription.store,
        subscriptions=[subscription],
    )


def shared_worker(agents: list[Agent], settings: Settings) -> Worker:
    """Several agents in one process (``itinerant-agents``), each still on its own topic with its
    own state store: fewer processes polling the broker, for small machines."""
    subscriptions = [agent_subscription(agent, settings) for agent in agents]
    first = subscriptions[0].store
    assert first is not None
    return Worker(
        service=SHARED_WORKER, settings=settings, store=first, subscriptions=subscriptions
    )
