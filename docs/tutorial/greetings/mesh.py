"""The greetings mesh: ``itinerant --app docs.tutorial.greetings.mesh:mesh up``."""

from __future__ import annotations

from itinerant import Mesh

from . import flows, greeter, translator

mesh = Mesh(
    "greetings",
    agents=[
        greeter.agent,
        translator.agent,
    ],
    entry=flows.GREET,
    flows=[flows.GREETING],
    request_model=greeter.GreetRequest,
    description="Greets people by name, in their language.",
)
