"""The greetings mesh's flows: where a request goes after the greeter.

    greeting: greeter.greet -> translator.translate (skipped for English)

The greeter picks the flow (``ctx.follow``); the translator's ``when`` skips it for English.
"""

from __future__ import annotations

from itinerant import Flow, Step

GREET = Step(agent="greeter", action="greet")

GREETING = Flow(
    "greeting",
    [Step(agent="translator", action="translate", when='language != "en"')],
    "greet, then translate unless the greeting is in English already",
)
