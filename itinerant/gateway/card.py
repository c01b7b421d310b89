"""The mesh's A2A agent card, served at ``/.well-known/agent-card.json``; a card per agent at
``/agents/<name>/.well-known/agent-card.json``; the extended card of an authenticated caller.

Its name, description and skills are the application's (:class:`itinerant.Mesh`: ``name``,
``description``, ``request_help``, ``skills``); the protocol, transport, modes, capabilities
and security schemes are the gateway's own.
"""

from __future__ import annotations

from importlib import metadata

from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
    StringList,
)
from a2a.utils.constants import (
    AGENT_CARD_WELL_KNOWN_PATH,
    PROTOCOL_VERSION_0_3,
    PROTOCOL_VERSION_1_0,
    TransportProtocol,
)

from itinerant.mesh import Mesh, Skill
from itinerant.runtime.agent import Agent
from itinerant.security.tokens import Principal

from .config import METADATA_KEY, GatewayConfig
from .guard import AGENTS_PREFIX
from .inbound import limits

__all__ = [
    "METADATA_KEY",
    "MODES",
    "PROTOCOL_VERSION",
    "PROTOCOL_VERSIONS",
    "agent_card",
    "agent_cards",
    "agent_path",
    "extended_card",
    "request_help",
    "version",
]

PROTOCOL_VERSION = PROTOCOL_VERSION_1_0
#: The versions the one JSON-RPC endpoint speaks: 1.0, and 0.3 through the SDK's compat layer.
PROTOCOL_VERSIONS = (PROTOCOL_VERSION_1_0, PROTOCOL_VERSION_0_3)
MODES = ["application/json", "text/plain"]


def version() -> str:
    try:
        return metadata.version("itinerant")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def request_help(mesh: Mesh) -> str:
    """How to ask: the application's paragraph, then what every mesh's gateway accepts."""
    max_hops, max_deadline_s = limits(mesh.request_model)
    own = mesh.request_help or (
        "Send one message per task: a data part holding an itinerant.request.v1 object "
        "(schemas/itinerant.request.v1.json)"
        + (", or a text part with the ask in plain words." if mesh.from_text else ".")
    )
    return (
        f"{own.rstrip()} Optional metadata.{METADATA_KEY}.max_hops (<= {max_hops}) and "
        f"metadata.{METADATA_KEY}.deadline_s (<= {max_deadline_s:g}) lower the saga's budget "
        "(never above the request's own)"
        + (
            f"; other metadata.{METADATA_KEY} fields are handed to the reading of a text part."
            if mesh.from_text
            else "."
        )
        + " The task id is the saga id."
    )


def _skill(skill: Skill) -> AgentSkill:
    return AgentSkill(
        id=skill.id,
        name=skill.name,
        description=skill.description,
        tags=list(skill.tags),
        examples=list(skill.examples),
        input_modes=list(MODES),
        output_modes=list(MODES),
    )


def _skills(mesh: Mesh) -> list[AgentSkill]:
    if mesh.skills:
        return [_skill(s) for s in mesh.skills]
    # A mesh that names no skill still offers one: running its flows from a request.
    return [
        _skill(
            Skill(
                id=mesh.name,
                name=mesh.name,
                description=mesh.description or f"Runs a request through the {mesh.name} mesh.",
                tags=("saga",),
            )
        )
    ]


def interfaces(url: str) -> list[AgentInterface]:
    """One JSON-RPC endpoint for each version spoken (a 1.0 client picks 1.0; a 0.3 client
    reads the 0.3 fields the SDK derives from the 0.3 interface)."""
    return [
        AgentInterface(
            url=url, protocol_binding=TransportProtocol.JSONRPC.value, protocol_version=version
        )
        for version in PROTOCOL_VERSIONS
    ]


def bearer_scheme() -> dict[str, SecurityScheme]:
    return {
        "bearer": SecurityScheme(
            http_auth_security_scheme=HTTPAuthSecurityScheme(
                scheme="bearer",
                description=(
                    "Authorization: Bearer <token>; the token names the caller, who "
                    "sees and cancels only its own tasks"
                ),
            )
        )
    }


def agent_card(config: GatewayConfig, mesh: Mesh) -> AgentCard:
    bearer = config.authenticated
    description = mesh.description or (
        f"The {mesh.name} mesh: a request runs as a saga across a Kafka mesh of agents; a "
        "failed step undoes the steps already completed."
    )
    return AgentCard(
        name=mesh.name,
        description=f"{description.rstrip()} {request_help(mesh)}",
        version=version(),
        supported_interfaces=interfaces(config.rpc_url),
        provider=AgentProvider(organization="Itinerant", url=config.public_url),
        capabilities=AgentCapabilities(
            streaming=True, push_notifications=True, extended_agent_card=True
        ),
        default_input_modes=list(MODES),
        default_output_modes=list(MODES),
        skills=_skills(mesh),
        security_schemes=bearer_scheme() if bearer else None,
        security_requirements=(
            [SecurityRequirement(schemes={"bearer": StringList()})] if bearer else None
        ),
    )


def _action_skill(agent: Agent, action: str) -> AgentSkill:
    return AgentSkill(
        id=f"{agent.name}.{action}",
        name=f"{agent.name}: {action}",
        description=f"{agent.description.rstrip('.')}: the {action!r} step of a saga.",
        tags=[agent.name, "step"],
        input_modes=["application/json"],
        output_modes=["application/json"],
    )


def agent_path(name: str) -> str:
    """Where the card of the mesh's agent ``name`` is served."""
    return f"{AGENTS_PREFIX}{name}{AGENT_CARD_WELL_KNOWN_PATH}"


def agent_cards(config: GatewayConfig, mesh: Mesh) -> dict[str, AgentCard]:
    """A card per agent of the mesh: what it does (its actions as skills). An agent takes no
    A2A call of its own: its card names the gateway's endpoint, where a message runs the mesh's
    flows, which route through the agent."""
    mesh_card = agent_card(config, mesh)
    cards = {}
    for agent in (*mesh.agents, *mesh.optional_agents):
        card = AgentCard()
        card.CopyFrom(mesh_card)
        card.name = f"{mesh.name}/{agent.name}"
        card.description = (
            f"{agent.description.rstrip()} One agent of the {mesh.name} mesh: it takes no A2A "
            f"call of its own; a message to this card's interface runs the {mesh.name} mesh "
            f"(see its card at {AGENT_CARD_WELL_KNOWN_PATH}), whose sagas route through it."
        )
        card.capabilities.extended_agent_card = False
        del card.skills[:]
        card.skills.extend(_action_skill(agent, action) for action in sorted(agent.handlers))
        cards[agent.name] = card
    return cards


def extended_card(config: GatewayConfig, mesh: Mesh, principal: Principal) -> AgentCard:
    """The card an authenticated caller gets from GetExtendedAgentCard: the mesh's card, with
    every agent's actions as skills, the per-agent cards' paths, and what the gateway allows
    this caller."""
    card = agent_card(config, mesh)
    for agent in (*mesh.agents, *mesh.optional_agents):
        card.skills.extend(_action_skill(agent, action) for action in sorted(agent.handlers))
    paths = ", ".join(agent_path(a.name) for a in (*mesh.agents, *mesh.optional_agents))
    role = (
        "an operator: you see and cancel every task"
        if principal.operator
        else ("you see, list and cancel only your own tasks")
    )
    card.description = (
        f"{card.description} For {principal.name!r}: {role}; at most {config.rate_per_s:g} "
        f"requests per second (bursts of {config.rate_burst}) and {config.max_streams} open "
        f"streams. The agents' cards: {paths}."
    )
    return card
