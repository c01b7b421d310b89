"""Build the worker process of one agent from its definition."""

from __future__ import annotations

from .agent import Agent
from .processor import Processor
from .providers import make_provider
from .settings import Settings
from .store import Store
from .worker import Subscription, Worker


def agent_worker(agent: Agent, settings: Settings) -> Worker:
    store = Store(settings.data_dir / "state" / f"{agent.name}.db", agent.migrations)
    processor = Processor(agent, settings, store, make_provider(settings, agent.name))
    return Worker(
        service=agent.name,
        settings=settings,
        store=store,
        subscriptions=[Subscription(settings.agent_topic(agent.name), processor.process)],
    )
