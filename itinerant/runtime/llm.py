"""The LLM provider interface. Agents ask for a typed answer; the provider decides how.

``DeterministicProvider`` is the offline default: it answers with rule-based functions that each
agent registers, never with a model, and says so in its name (``deterministic-rules``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from itinerant.errors import NonRetryableError

T = TypeVar("T", bound=BaseModel)

# A prompt may carry feedback (e.g. a reviewing agent's findings) after this line; rule-based
# providers read only what comes before it.
FEEDBACK_MARKER = "\n--- feedback ---\n"


@dataclass(frozen=True)
class Completion(Generic[T]):
    value: T
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class ToolAsk:
    """One tool call the model asked for: its id, the tool's name, the arguments (JSON)."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class ToolRound(Generic[T]):
    """One chat round with tools offered: the tool calls the model asks for, or its answer
    (``completion``); the usage of the round either way."""

    asks: list[ToolAsk]
    completion: Completion[T] | None
    #: The model's message as it goes back into the conversation (with its tool calls).
    message: dict[str, Any]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class LLMProvider(Protocol):
    name: str
    metered: bool  # spends tokens and money (checked against the request's budget)

    async def generate(
        self, task: str, prompt: str, output: type[T], *, max_tokens: int | None = None
    ) -> Completion[T]: ...


Rule = Callable[[str], BaseModel]


class DeterministicProvider:
    """Rule-based stand-in for an LLM: same input, same output, no network, no tokens."""

    name = "deterministic-rules"
    metered = False

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}

    def register(self, task: str, rule: Rule) -> None:
        self._rules[task] = rule

    async def generate(
        self, task: str, prompt: str, output: type[T], *, max_tokens: int | None = None
    ) -> Completion[T]:
        rule = self._rules.get(task)
        if rule is None:
            raise NonRetryableError(
                f"the deterministic provider has no rule for task {task!r}",
                reason="llm_no_rule",
                hint="register a rule or set ITINERANT_LLM_PROVIDER=openai",
            )
        value: Any = rule(prompt.split(FEEDBACK_MARKER, 1)[0].strip())
        return Completion(value=output.model_validate(value.model_dump()), model=self.name)
