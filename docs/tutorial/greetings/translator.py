"""The translator: puts a greeting in the language asked for, with the LLM (ctx.generate).

Offline, the deterministic provider answers from a phrasebook (registered at start-up); with
ITINERANT_LLM_PROVIDER=openai the same call goes to a real model, within the request's budget."""

from __future__ import annotations

from pydantic import BaseModel

from itinerant import Agent, AgentServices, HandlerContext
from itinerant.runtime.llm import DeterministicProvider

from .greeter import Greeting

agent = Agent("translator", "Translates greetings.")

PHRASEBOOK = {
    "fr": {"Hello": "Bonjour", "Welcome back": "Bon retour"},
    "de": {"Hello": "Hallo", "Welcome back": "Willkommen zurück"},
    "es": {"Hello": "Hola", "Welcome back": "Bienvenido de nuevo"},
}


class Translation(BaseModel):
    text: str


def prompt_for(greeting: Greeting) -> str:
    return (
        "Translate this greeting; answer with the translation only.\n"
        f"Language: {greeting.language}\n"
        f"Text: {greeting.text}"
    )


def from_phrasebook(prompt: str) -> Translation:
    """The deterministic provider's rule: the prompt in, the answer out."""
    fields = dict(line.split(": ", 1) for line in prompt.splitlines()[1:])
    text = fields["Text"]
    for english, translated in PHRASEBOOK[fields["Language"]].items():
        text = text.replace(english, translated)
    return Translation(text=text)


@agent.on_start
def register_rules(services: AgentServices) -> None:
    if isinstance(services.provider, DeterministicProvider):
        services.provider.register("translate", from_phrasebook)


@agent.handler("translate")
async def translate(greeting: Greeting, ctx: HandlerContext) -> Greeting:
    completion = await ctx.generate("translate", prompt_for(greeting), Translation)
    return greeting.model_copy(
        update={"text": completion.value.text, "translated_by": ctx.provider.name}
    )
