"""The greeter: says hello by name, remembers who has been here before, and picks the route."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from itinerant import Agent, HandlerContext, Request

from .flows import GREETING

Language = Literal["en", "fr", "de", "es"]


class GreetRequest(Request):
    """What a client sends (``itinerant.request.v1``): who to greet, in which language."""

    name: str = Field(min_length=1, max_length=80)
    language: Language = "en"


class Greeting(BaseModel):
    """What the greeter hands on, and the saga's result."""

    name: str
    language: Language
    text: str
    visits: int
    translated_by: str | None = None


agent = Agent(
    "greeter",
    "Greets people by name and counts their visits.",
    migrations=(
        "CREATE TABLE IF NOT EXISTS visits (name TEXT PRIMARY KEY, count INTEGER NOT NULL)",
    ),
)


@agent.handler("greet")
async def greet(request: GreetRequest, ctx: HandlerContext) -> Greeting:
    # ctx.db is this agent's own SQLite database, in the same transaction as the record that
    # this message was processed: a redelivered request does not count twice.
    ctx.db.execute(
        "INSERT INTO visits (name, count) VALUES (?, 1) "
        "ON CONFLICT (name) DO UPDATE SET count = count + 1",
        (request.name,),
    )
    (visits,) = ctx.db.execute(
        "SELECT count FROM visits WHERE name = ?", (request.name,)
    ).fetchone()
    text = f"Hello, {request.name}!" if visits == 1 else f"Welcome back, {request.name}!"
    ctx.follow(GREETING)  # the steps after this one: the greeting flow
    return Greeting(name=request.name, language=request.language, text=text, visits=visits)
