"""What every request on the inbound topic may carry besides the application's own fields: the
client's id (it becomes the saga id) and the budget it asks for (clamped at ingress)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

REQUEST_TYPE = "itinerant.request"


class Request(BaseModel):
    """Base of an application's request model (``Mesh.request_model``); ``itinerant.request.v1``
    on the wire. Subclass it and add the fields your flows need."""

    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(
        default=None, max_length=100, description="client's id; becomes the saga id (dedup)"
    )
    max_hops: int | None = Field(default=None, ge=1, le=100)
    deadline_s: float | None = Field(default=None, gt=0, le=3600)
    max_tokens: int | None = Field(
        default=None, ge=0, description="LLM token budget (never above the configured default)"
    )
    max_cost_usd: float | None = Field(
        default=None, ge=0, description="LLM spend budget (never above the configured default)"
    )
