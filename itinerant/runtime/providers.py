"""Choose the LLM provider from settings."""

from __future__ import annotations

from itinerant.errors import NonRetryableError
from itinerant.runtime.llm import DeterministicProvider, LLMProvider
from itinerant.settings import Settings


def make_provider(settings: Settings, service: str) -> LLMProvider:
    if settings.llm_provider == "deterministic":
        return DeterministicProvider()
    if not settings.llm_base_url:
        raise NonRetryableError(
            "ITINERANT_LLM_PROVIDER=openai needs ITINERANT_LLM_BASE_URL",
            reason="configuration",
            hint="set it to any OpenAI-compatible server, or use the deterministic provider",
        )
    from itinerant.runtime.openai_provider import OpenAIProvider

    return OpenAIProvider(settings, service)
