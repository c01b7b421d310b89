"""Itinerant: AI agents as ordinary, well-behaved Kafka microservices.

An application is its agents (one module each), its flows and a :class:`Mesh` naming them;
``itinerant up --app package.module:mesh`` runs it. Everything that is not an agent's own job
(decoding, dedup, budgets, routing slips, retries, dead letters, tracing, metrics, sagas) is the
framework's. See docs/framework.md and docs/tutorial.md.
"""

from itinerant.errors import (
    BudgetExceeded,
    BusinessFailure,
    DependencyUnavailable,
    ItinerantError,
    NonRetryableError,
    RetryableError,
    SagaStop,
)
from itinerant.mesh import ApprovalCheck, Mesh, Skill, load_mesh
from itinerant.runtime.agent import Agent, AgentServices, HandlerContext
from itinerant.settings import Settings
from itinerant.wire.flows import Flow
from itinerant.wire.request import Request
from itinerant.wire.slip import Approval, Step
from itinerant.wire.slip import ParallelGroup as Parallel

__all__ = [
    "Agent",
    "AgentServices",
    "Approval",
    "ApprovalCheck",
    "BudgetExceeded",
    "BusinessFailure",
    "DependencyUnavailable",
    "Flow",
    "HandlerContext",
    "ItinerantError",
    "Mesh",
    "NonRetryableError",
    "Parallel",
    "Request",
    "RetryableError",
    "SagaStop",
    "Settings",
    "Skill",
    "Step",
    "load_mesh",
]
