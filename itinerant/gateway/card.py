"""The mesh's A2A agent card, served at ``/.well-known/agent-card.json``."""

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

from .config import GatewayConfig

PROTOCOL_VERSION = "0.3.0"
MODES = ["application/json", "text/plain"]
METADATA_KEY = "itinerant"

_REQUEST_HELP = (
    "Send one message per task: a data part holding an itinerant.request.v1 object "
    "(schemas/itinerant.request.v1.json: traveller, origin, destination, depart_date, "
    "return_date, travellers, budget_usd, or text), or a text part with the trip in plain words "
    "(the traveller's name from metadata.itinerant.traveller, else 'A2A client'). Optional "
    "metadata.itinerant.max_hops (<= 100) and metadata.itinerant.deadline_s (<= 3600) lower the "
    "saga's budget. The task id is the saga id."
)


def version() -> str:
    try:
        return metadata.version("itinerant")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def agent_card(config: GatewayConfig) -> AgentCard:
    bearer = config.token is not None
    return AgentCard(
        name="Itinerant travel mesh",
        description=(
            "Plans and books trips (flights and hotel, validated against the traveller's budget, "
            "confirmed) as a saga across a Kafka mesh of agents; a failed step undoes the "
            "bookings already made. Refunds are not available yet. " + _REQUEST_HELP
        ),
        version=version(),
        protocol_version=PROTOCOL_VERSION,
        url=config.rpc_url,
        preferred_transport=TransportProtocol.jsonrpc.value,
        provider=AgentProvider(organization="Itinerant", url=config.public_url),
        capabilities=AgentCapabilities(
            streaming=True, push_notifications=False, state_transition_history=False
        ),
        default_input_modes=list(MODES),
        default_output_modes=list(MODES),
        skills=[
            AgentSkill(
                id="plan-trip",
                name="Plan a trip",
                description=(
                    "Understands a trip request, structured or free text, and plans it: cities "
                    "(IATA codes), dates, travellers, budget; a same-day return needs no hotel."
                ),
                tags=["travel", "planning"],
                examples=[
                    "A long weekend in Rome from London, 2027-04-09 to 2027-04-12, 2 travellers",
                ],
                input_modes=list(MODES),
                output_modes=list(MODES),
            ),
            AgentSkill(
                id="book-trip",
                name="Book a trip",
                description=(
                    "Books the flights and the hotel, checks the total against the budget and "
                    "returns the itinerary with its confirmation; any failure cancels what was "
                    "booked (the task ends failed, with the reason)."
                ),
                tags=["travel", "booking", "saga"],
                examples=[
                    '{"traveller":{"name":"Ada"},"origin":"MAD","destination":"LIS",'
                    '"depart_date":"2027-03-12","return_date":"2027-03-15","travellers":2}',
                ],
                input_modes=list(MODES),
                output_modes=list(MODES),
            ),
            AgentSkill(
                id="refund",
                name="Refund a booking (not available yet)",
                description=(
                    "Not available yet: a refund request is accepted but the planner answers "
                    "that only trips are supported, and the task ends failed."
                ),
                tags=["travel", "refund", "not-available"],
                input_modes=list(MODES),
                output_modes=list(MODES),
            ),
        ],
        security_schemes=(
            {
                "bearer": SecurityScheme(
                    root=HTTPAuthSecurityScheme(
                        scheme="bearer",
                        description="Authorization: Bearer <ITINERANT_GATEWAY_TOKEN>",
                    )
                )
            }
            if bearer
            else None
        ),
        security=[{"bearer": []}] if bearer else None,
    )
