"""An LLM provider over the openai SDK, for any OpenAI-compatible server.

Structured output is requested as JSON Schema from the pydantic model and validated on return; a
reply that does not validate is retryable (the runtime bounds the retries). 429, 5xx, timeouts
and connection failures are retryable; other 4xx are not.
"""

from __future__ import annotations

from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from .errors import NonRetryableError, ProviderUnavailable, RetryableError
from .llm import Completion
from .settings import Settings

T = TypeVar("T", bound=BaseModel)

# USD per 1M tokens (prompt, completion); unknown models cost what the default row says.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "default": (1.00, 3.00),
}


class InvalidLLMOutput(RetryableError):
    reason = "llm_invalid_output"
    hint = "the model's reply did not match the schema; retried, then dead-lettered with the reply"


class OpenAIProvider:
    def __init__(self, settings: Settings, service: str) -> None:
        self.name = f"openai:{settings.llm_model}"
        self.model = settings.llm_model
        self.service = service
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "unused"
        self._client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=key,
            timeout=settings.llm_timeout_s,
            max_retries=0,  # the runtime retries, with backoff bounded by the deadline
        )

    async def generate(
        self, task: str, prompt: str, output: type[T], *, max_tokens: int | None = None
    ) -> Completion[T]:
        schema = output.model_json_schema()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": f"Task: {task}. Answer with JSON only."},
                {"role": "user", "content": prompt},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": output.__name__, "schema": schema},
            },
        }
        if max_tokens:
            request["max_tokens"] = max_tokens
        try:
            reply = await self._client.chat.completions.create(**request)
        except (openai.RateLimitError, openai.APITimeoutError, openai.APIConnectionError) as exc:
            raise ProviderUnavailable(f"LLM call failed: {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise ProviderUnavailable(f"LLM server error {exc.status_code}") from exc
            raise NonRetryableError(
                f"LLM refused the request ({exc.status_code}): {exc.message}",
                reason="llm_rejected",
                hint="check the model name, the API key and the request size",
            ) from exc
        text = reply.choices[0].message.content or ""
        try:
            value = output.model_validate_json(text)
        except ValidationError as exc:
            raise InvalidLLMOutput(
                f"reply is not a valid {output.__name__}: {text[:500]!r}"
            ) from exc
        usage = reply.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        price_in, price_out = PRICES.get(self.model, PRICES["default"])
        cost = (prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000
        return Completion(
            value=value,
            model=self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=round(cost, 8),
        )
