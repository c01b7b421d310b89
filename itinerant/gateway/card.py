"""The mesh's A2A agent card, served at ``/.well-known/agent-card.json``.

Its name, description and skills are the application's (:class:`itinerant.Mesh`: ``name``,
``description``, ``request_help``, ``skills``); the protocol, transport, modes, capabilities
and security schemes are the gateway's own.
"""

from __future__ import annotations

from importlib import metadata

from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentProvider,
    AgentSkill,
    HTTPAuthSecurityScheme,
    SecurityScheme,
    TransportProtocol,
)

from itinerant.mesh import Mesh, Skill

from .config import METADATA_KEY, GatewayConfig
from .inbound import limits

__all__ = ["METADATA_KEY", "MODES", "PROTOCOL_VERSION", "agent_card", "request_help", "version"]

PROTOCOL_VERSION = "0.3.0"
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
        examples=list(skill.examples) or None,
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
        protocol_version=PROTOCOL_VERSION,
        url=config.rpc_url,
        preferred_transport=TransportProtocol.jsonrpc.value,
        provider=AgentProvider(organization="Itinerant", url=config.public_url),
        capabilities=AgentCapabilities(
            streaming=True, push_notifications=True, state_transition_history=False
        ),
        default_input_modes=list(MODES),
        default_output_modes=list(MODES),
        skills=_skills(mesh),
        security_schemes=(
            {
                "bearer": SecurityScheme(
                    root=HTTPAuthSecurityScheme(
                        scheme="bearer",
                        description=(
                            "Authorization: Bearer <token>; the token names the caller, who "
                            "sees and cancels only its own tasks"
                        ),
                    )
                )
            }
            if bearer
            else None
        ),
        security=[{"bearer": []}] if bearer else None,
    )
