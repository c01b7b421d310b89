"""Budgets (docs/architecture.md#budgets-and-loops): limits and spend of one request, checked
before every handler call."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from itinerant.errors import BudgetExceeded, InvalidSlip

DEFAULT_MAX_TOOL_CALLS = 50
"""The tool-call limit of a header written before the field existed, and the default of
``ITINERANT_DEFAULT_MAX_TOOL_CALLS`` (docs/wire-contract.md#the-budget-header)."""


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_hops: int = Field(ge=1)
    deadline: datetime
    max_tokens: int = Field(default=0, ge=0, description="0 = no LLM tokens allowed")
    max_cost_usd: float = Field(default=0.0, ge=0)
    max_tool_calls: int = Field(
        default=DEFAULT_MAX_TOOL_CALLS, ge=0, description="0 = no tool calls allowed"
    )
    hops: int = Field(default=0, ge=0)
    tokens: int = Field(default=0, ge=0)
    cost_usd: float = Field(default=0.0, ge=0)
    tool_calls: int = Field(default=0, ge=0)

    def check(self, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        if self.hops >= self.max_hops:
            raise BudgetExceeded("hops", f"hop budget of {self.max_hops} used up")
        if now >= self.deadline:
            raise BudgetExceeded("deadline", f"deadline {self.deadline.isoformat()} has passed")
        if self.tokens > self.max_tokens:
            raise BudgetExceeded("tokens", f"used {self.tokens} of {self.max_tokens} tokens")
        if self.cost_usd > self.max_cost_usd:
            raise BudgetExceeded("cost", f"spent ${self.cost_usd:.4f} of ${self.max_cost_usd:.4f}")
        if self.tool_calls > self.max_tool_calls:
            raise BudgetExceeded(
                "tool_calls", f"made {self.tool_calls} of {self.max_tool_calls} tool calls"
            )

    def spent(
        self, *, hops: int = 0, tokens: int = 0, cost_usd: float = 0.0, tool_calls: int = 0
    ) -> Budget:
        return self.model_copy(
            update={
                "hops": self.hops + hops,
                "tokens": self.tokens + tokens,
                "cost_usd": round(self.cost_usd + cost_usd, 6),
                "tool_calls": self.tool_calls + tool_calls,
            }
        )

    def within(self, before: Budget | None) -> bool:
        """True when this budget is ``before`` with more spend at most: the same or lower
        limits, no spend taken back (a budget only shrinks along the way)."""
        if before is None:
            return True
        return (
            self.max_hops <= before.max_hops
            and self.deadline <= before.deadline
            and self.max_tokens <= before.max_tokens
            and self.max_cost_usd <= before.max_cost_usd + 1e-9
            and self.max_tool_calls <= before.max_tool_calls
            and self.hops >= before.hops
            and self.tokens >= before.tokens
            and self.cost_usd >= before.cost_usd - 1e-9
            and self.tool_calls >= before.tool_calls
        )

    def limits_within(self, ceiling: Budget) -> bool:
        """True when no limit of this budget is above ``ceiling``'s."""
        return (
            self.max_hops <= ceiling.max_hops
            and self.deadline <= ceiling.deadline
            and self.max_tokens <= ceiling.max_tokens
            and self.max_cost_usd <= ceiling.max_cost_usd + 1e-9
            and self.max_tool_calls <= ceiling.max_tool_calls
        )

    def clamped(self, ceiling: Budget) -> Budget:
        """This budget with every limit at most ``ceiling``'s (ingress: docs/security.md)."""
        return self.model_copy(
            update={
                "max_hops": min(self.max_hops, ceiling.max_hops),
                "deadline": min(self.deadline, ceiling.deadline),
                "max_tokens": min(self.max_tokens, ceiling.max_tokens),
                "max_cost_usd": min(self.max_cost_usd, ceiling.max_cost_usd),
                "max_tool_calls": min(self.max_tool_calls, ceiling.max_tool_calls),
            }
        )

    @property
    def tokens_left(self) -> int:
        return max(self.max_tokens - self.tokens, 0)

    @property
    def tool_calls_left(self) -> int:
        return max(self.max_tool_calls - self.tool_calls, 0)

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> Budget:
        try:
            return cls.model_validate_json(raw)  # one parse, in pydantic-core
        except (ValueError, ValidationError, RecursionError) as exc:
            raise InvalidSlip(
                f"ce_budget is not a valid budget: {exc}", reason="invalid_budget"
            ) from exc
