"""Reading a free-text travel ask. ``read_free_text`` is the deterministic, offline rule set the
default provider uses; an LLM provider fills the same ``PlanDraft`` model."""

from __future__ import annotations

import re
from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.contracts.trip import Proposal
from services.inventory import catalogue


class PlanDraft(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flow: Literal["trip", "refund", "unsupported"]
    origin: str | None = None
    destination: str | None = None
    depart_date: date | None = None
    return_date: date | None = None
    travellers: int | None = Field(default=None, ge=1, le=9)
    budget_usd: float | None = None
    note: str | None = None
    proposal: Proposal | None = Field(
        default=None,
        description="flight numbers, hotel id and prices you propose; every one is checked",
    )


_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_TRAVELLERS = re.compile(r"\b(\d)\s*(?:travell?ers|people|persons|adults|passengers)\b", re.I)
_BUDGET = re.compile(r"(?:budget|under|max(?:imum)?|up to)\D{0,6}(\d[\d,]*(?:\.\d+)?)", re.I)


def _city_after(words: tuple[str, ...], text: str) -> str | None:
    names = catalogue().cities
    alternatives = "|".join(re.escape(n) for n in [*names.values(), *names.keys()])
    for word in words:
        match = re.search(rf"\b{word}\s+({alternatives})\b", text, re.I)
        if match:
            return catalogue().city_code(match.group(1))
    return None


def read_free_text(text: str) -> PlanDraft:
    if re.search(r"\brefund\b", text, re.I):
        return PlanDraft(flow="refund", note="a refund")
    dates = [date.fromisoformat(d) for d in _DATE.findall(text)]
    origin = _city_after(("from",), text)
    destination = _city_after(("to", "in", "visit"), text)
    if origin is None and destination is None and not dates:
        return PlanDraft(flow="unsupported", note="no cities or dates found in the text")
    travellers = _TRAVELLERS.search(text)
    budget = _BUDGET.search(text)
    return PlanDraft(
        flow="trip",
        origin=origin,
        destination=destination,
        depart_date=dates[0] if dates else None,
        return_date=dates[1] if len(dates) > 1 else (dates[0] if dates else None),
        travellers=int(travellers.group(1)) if travellers else None,
        budget_usd=float(budget.group(1).replace(",", "")) if budget else None,
    )
