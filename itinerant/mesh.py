"""An application: its agents, the flows they run in, the request it accepts, and the policy of
its approval gates. ``itinerant up --app package.module:mesh`` runs any mesh (docs/framework.md).

    mesh = Mesh(
        "shop",
        agents=[intake.agent, orders.agent, ...],
        entry=Step(agent="intake", action="read"),
        flows=[ORDER, RETURN],
        request_model=OrderRequest,
        start=lambda request: OrderDocument(request=request),
        approval_policy=needs_approval,
    )
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic import BaseModel

from itinerant.errors import NonRetryableError
from itinerant.runtime.agent import Agent
from itinerant.settings import Settings
from itinerant.wire.flows import Flow
from itinerant.wire.request import Request
from itinerant.wire.slip import Step


class MeshError(NonRetryableError):
    """The application named by ITINERANT_APP cannot be loaded, or is inconsistent."""

    reason = "mesh_error"


class ApprovalCheck(NamedTuple):
    """What an approval policy says of a payload reaching a gate: why a human must decide (no
    reasons: nobody needs to), and the amount at stake, if any, for the operator's view."""

    reasons: list[str]
    amount: float | None = None


ApprovalPolicy = Callable[[dict[str, Any]], ApprovalCheck]


def never_ask(_payload: dict[str, Any]) -> ApprovalCheck:
    """The default policy: a gate passes every payload."""
    return ApprovalCheck([])


@dataclass(frozen=True)
class Skill:
    """A capability advertised to other agent systems (the A2A agent card)."""

    id: str
    name: str
    description: str
    tags: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Mesh:
    name: str
    agents: Sequence[Agent]
    entry: Step
    flows: Sequence[Flow] = ()
    request_model: type[Request] = Request
    start: Callable[[Any], BaseModel] | None = None
    approval_policy: ApprovalPolicy = never_ask
    #: Agents that run only when ITINERANT_AGENTS lists them (diagnostics, experiments).
    optional_agents: Sequence[Agent] = ()
    description: str = ""
    skills: Sequence[Skill] = ()
    #: Payload models exported to schemas/ beside the framework's, by versioned type name.
    schemas: dict[str, type[BaseModel]] = field(default_factory=dict)
    #: Replicas per agent in generated deployments (`itinerant deploy render`); others run one.
    replicas: dict[str, int] = field(default_factory=dict)
    #: ``samples(n)``: n varied requests for `itinerant demo` (default: none beyond the files).
    samples: Callable[[int], Sequence[Request]] | None = None
    #: ``from_text(text, options)``: the raw request (a JSON object, validated like any other)
    #: for a free-text ask, as the A2A gateway's text parts bring; ``options`` are the caller's
    #: ``metadata.itinerant`` fields. None: text parts are refused.
    from_text: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
    #: A paragraph for other agent systems on how to ask (the A2A card's description).
    request_help: str = ""
    #: ``summary(output)``: one line for people about a completed saga's final payload (the
    #: demo's table, the gateway's status); None: the framework shows the step count only.
    summary: Callable[[dict[str, Any]], str | None] | None = None
    #: ``servers()``: the side servers to run beside the agents now, by service name, each a
    #: ``main(settings)`` that serves until stopped (an MCP server the agents call, say):
    #: `itinerant up` starts each as a service, `itinerant worker <name>` runs one
    #: (docs/mcp.md#agents-calling-mcp-tools). None: there are none.
    servers: Callable[[], dict[str, Callable[[Settings], None]]] | None = None

    def side_servers(self) -> dict[str, Callable[[Settings], None]]:
        return dict(self.servers()) if self.servers is not None else {}

    def summarize(self, output: dict[str, Any] | None) -> str | None:
        if output is None or self.summary is None:
            return None
        try:
            return self.summary(output)
        except (KeyError, TypeError, ValueError):
            return None  # a payload the summary does not know: no line rather than a crash

    def __post_init__(self) -> None:
        names = [a.name for a in self.all_agents()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MeshError(f"mesh {self.name!r} names agent(s) {twice} more than once")
        self.agent(self.entry.agent)  # the entry step must be one of ours
        for flow in self.flows:
            unknown = sorted(set(flow.agents()) - set(names))
            if unknown:
                raise MeshError(f"flow {flow.name!r} names unknown agent(s) {unknown}")

    def all_agents(self) -> list[Agent]:
        return [*self.agents, *self.optional_agents]

    def agent(self, name: str) -> Agent:
        for agent in self.all_agents():
            if agent.name == name:
                return agent
        known = ", ".join(a.name for a in self.all_agents())
        raise MeshError(f"mesh {self.name!r} has no agent {name!r}; agents: {known}")

    def flow(self, name: str) -> Flow:
        for flow in self.flows:
            if flow.name == name:
                return flow
        raise MeshError(f"mesh {self.name!r} has no flow {name!r}")

    def first_payload(self, request: Request) -> BaseModel:
        """What the entry step receives for a new request."""
        return self.start(request) if self.start is not None else request

    def bind(self, settings: Settings) -> Settings:
        """``settings`` with the agents this mesh runs by default when none are listed."""
        if settings.agents:
            for name in settings.agents:
                self.agent(name)
            return settings
        return settings.model_copy(update={"agents": [a.name for a in self.agents]})

    def entry_step(self, settings: Settings) -> Step:
        if settings.entry_step is None:
            return self.entry
        agent, action = settings.entry_step.split(".", 1)
        return Step(agent=agent, action=action)


@lru_cache(maxsize=8)
def load_mesh(spec: str) -> Mesh:
    """The Mesh at ``package.module:attribute``."""
    module_name, _, attribute = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # an application in the working directory, as uvicorn
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise MeshError(
            f"cannot import the application module {module_name!r} ({exc})",
            hint="set ITINERANT_APP (or --app) to package.module:mesh of an importable module",
        ) from exc
    mesh = getattr(module, attribute, None)
    if not isinstance(mesh, Mesh):
        raise MeshError(
            f"{spec} is not a Mesh (found {type(mesh).__name__})",
            hint="point ITINERANT_APP at a module-level `mesh = Mesh(...)`",
        )
    return mesh


def mesh_and_settings(settings: Settings) -> tuple[Mesh, Settings]:
    """The application ``settings.app`` names, and ``settings`` bound to it."""
    mesh = load_mesh(settings.app)
    return mesh, mesh.bind(settings)
