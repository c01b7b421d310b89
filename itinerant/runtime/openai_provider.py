"""An LLM provider over the openai SDK, for any OpenAI-compatible Chat Completions server.

* The model is per agent (``ITINERANT_LLM_MODELS``, else ``ITINERANT_LLM_MODEL``); the cost of a
  call comes from the price table ``ITINERANT_LLM_PRICES`` (USD per 1M prompt/completion tokens).
* Structured output is requested as JSON Schema from the pydantic model and validated on return.
  A reply that does not validate is retryable (``InvalidLLMOutput``: the runtime bounds the tries
  and then dead-letters the message with the raw reply in ``x-dlq-error``).
* 429, 5xx, timeouts and connection failures are retryable (``ProviderUnavailable``); other 4xx
  are not. The SDK's own retries are off: the runtime retries with backoff bounded by the deadline.
* Each call is a span and metrics per the OpenTelemetry GenAI conventions (``gen_ai.*``), and adds
  to ``itinerant_llm_tokens_total`` and ``itinerant_llm_cost_usd_total``.
"""

from __future__ import annotations

from typing import Any, TypeVar

import openai
from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode
from pydantic import BaseModel, ValidationError

from itinerant.errors import BudgetExceeded, NonRetryableError, ProviderUnavailable, RetryableError
from itinerant.observability import metrics
from itinerant.runtime.llm import Completion, ToolAsk, ToolRound
from itinerant.settings import Settings

T = TypeVar("T", bound=BaseModel)

RAW_REPLY_CHARS = 1200  # of a reply that did not validate, kept for the operator (x-dlq-error)


class InvalidLLMOutput(RetryableError):
    reason = "llm_invalid_output"
    hint = "the model's reply did not match the schema; retried, then dead-lettered with the reply"
    server_answered = True  # the model misbehaved; the server is fine (the circuit stays closed)


def cost_of(settings: Settings, model: str, prompt_tokens: int, completion_tokens: int) -> float:
    price_in, price_out = settings.llm_price(model)
    return round((prompt_tokens * price_in + completion_tokens * price_out) / 1_000_000, 8)


class OpenAIProvider:
    metered = True

    def __init__(self, settings: Settings, service: str) -> None:
        self.settings = settings
        self.model = settings.llm_model_for(service)
        self.name = f"openai:{self.model}"
        self.service = service
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else "unused"
        self._client = openai.AsyncOpenAI(
            base_url=settings.llm_base_url,
            api_key=key,
            timeout=settings.llm_timeout_s,
            max_retries=0,  # the runtime retries, with backoff bounded by the deadline
        )

    def request(
        self, task: str, prompt: str, output: type[BaseModel], max_tokens: int | None
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "system",
                    "content": f"Task: {task}. Answer with one JSON object matching the schema, "
                    "nothing else.",
                },
                {"role": "user", "content": prompt},
            ],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": output.__name__, "schema": output.model_json_schema()},
            },
        }
        if max_tokens:
            request["max_tokens"] = max_tokens
        return request

    def _chat_span(self, task: str, max_tokens: int | None) -> Any:
        """The client span of one chat call, with the GenAI request attributes."""
        return trace.get_tracer("itinerant.llm").start_as_current_span(
            f"chat {self.model}",
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.system": "openai",
                "gen_ai.request.model": self.model,
                "itinerant.llm.task": task,
                **({"gen_ai.request.max_tokens": max_tokens} if max_tokens else {}),
            },
        )

    async def generate(
        self, task: str, prompt: str, output: type[T], *, max_tokens: int | None = None
    ) -> Completion[T]:
        with self._chat_span(task, max_tokens) as span:
            try:
                return await self._generate(span, task, prompt, output, max_tokens)
            except Exception as exc:
                span.set_status(StatusCode.ERROR, str(exc)[:200])
                span.set_attribute("error.type", getattr(exc, "reason", type(exc).__name__))
                raise

    async def _generate(
        self, span: Span, task: str, prompt: str, output: type[T], max_tokens: int | None
    ) -> Completion[T]:
        reply = await self._create(self.request(task, prompt, output, max_tokens))
        prompt_tokens, completion_tokens, cost = self._usage(span, reply)
        if not reply.choices:
            raise InvalidLLMOutput("the reply has no choices")
        return self._answer(
            span, reply.choices[0], output, max_tokens, prompt_tokens, completion_tokens, cost
        )

    async def chat_round(
        self,
        task: str,
        messages: list[dict[str, Any]],
        output: type[T],
        *,
        tools: list[dict[str, Any]],
        max_tokens: int | None = None,
    ) -> ToolRound[T]:
        """One round of function calling (docs/mcp.md#function-calling): ``messages`` so far
        (the first is the prompt, as :meth:`request` builds it), ``tools`` offered in the
        Chat Completions ``tools`` format; the model's tool calls, or its typed answer."""
        with self._chat_span(task, max_tokens) as span:
            request = self.request(task, "", output, max_tokens)
            request["messages"] = messages
            request["tools"] = tools
            reply = await self._create(request)
            prompt_tokens, completion_tokens, cost = self._usage(span, reply)
            if not reply.choices:
                raise InvalidLLMOutput("the reply has no choices")
            choice = reply.choices[0]
            calls = choice.message.tool_calls or []
            message: dict[str, Any] = {"role": "assistant", "content": choice.message.content}
            if calls:
                asks = [
                    ToolAsk(c.id, c.function.name, c.function.arguments or "{}")
                    for c in calls
                    if c.type == "function"
                ]
                message["tool_calls"] = [
                    {
                        "id": a.call_id,
                        "type": "function",
                        "function": {"name": a.name, "arguments": a.arguments},
                    }
                    for a in asks
                ]
                span.set_attribute("gen_ai.response.finish_reasons", [choice.finish_reason or ""])
                return ToolRound(asks, None, message, prompt_tokens, completion_tokens, cost)
            answer = self._answer(
                span, choice, output, max_tokens, prompt_tokens, completion_tokens, cost
            )
            return ToolRound([], answer, message, prompt_tokens, completion_tokens, cost)

    async def _create(self, request: dict[str, Any]) -> Any:
        try:
            return await self._client.chat.completions.create(**request)
        except openai.APITimeoutError as exc:
            raise ProviderUnavailable(
                f"LLM call timed out after {self.settings.llm_timeout_s}s",
                reason="llm_timeout",
            ) from exc
        except (openai.RateLimitError, openai.APIConnectionError) as exc:
            raise ProviderUnavailable(f"LLM call failed: {exc}") from exc
        except openai.APIStatusError as exc:
            if exc.status_code >= 500:
                raise ProviderUnavailable(f"LLM server error {exc.status_code}") from exc
            raise NonRetryableError(
                f"LLM refused the request ({exc.status_code}): {exc.message}",
                reason="llm_rejected",
                hint="check the model name, the API key and the request size",
            ) from exc

    def _usage(self, span: Span, reply: Any) -> tuple[int, int, float]:
        usage = reply.usage
        prompt_tokens = usage.prompt_tokens if usage else 0
        completion_tokens = usage.completion_tokens if usage else 0
        cost = cost_of(self.settings, self.model, prompt_tokens, completion_tokens)
        span.set_attribute("gen_ai.response.model", reply.model or self.model)
        span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)
        metrics.LLM_TOKENS.labels(self.service, self.model, "input").inc(prompt_tokens)
        metrics.LLM_TOKENS.labels(self.service, self.model, "output").inc(completion_tokens)
        metrics.LLM_COST.labels(self.service, self.model).inc(cost)
        return prompt_tokens, completion_tokens, cost

    def _answer(
        self,
        span: Span,
        choice: Any,
        output: type[T],
        max_tokens: int | None,
        prompt_tokens: int,
        completion_tokens: int,
        cost: float,
    ) -> Completion[T]:
        span.set_attribute("gen_ai.response.finish_reasons", [choice.finish_reason or ""])
        text = choice.message.content or ""
        try:
            value = output.model_validate_json(text)
        except ValidationError as exc:
            if choice.finish_reason == "length" and max_tokens:
                raise BudgetExceeded(
                    "tokens",
                    f"the reply was cut at max_tokens={max_tokens}, all the request had left",
                ) from exc
            raise InvalidLLMOutput(
                f"reply is not a valid {output.__name__} ({_first_error(exc)}); raw reply: "
                f"{text[:RAW_REPLY_CHARS]!r}"
            ) from exc
        return Completion(
            value=value,
            model=self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
        )


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"]) or "(root)"
    return f"{where}: {err['msg']}"
