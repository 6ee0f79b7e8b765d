"""Config for an OpenAI-compatible endpoint (used inside annotate, generate, grade)."""

from __future__ import annotations

from dataclasses import dataclass

from phi1.sections import option


@dataclass
class LLMConfig:
    """An OpenAI-compatible endpoint. The API key is read from the environment
    variable named by ``api_key_env``; it never appears in configs or logs."""

    base_urls: list[str] = option([], doc="one or more base URLs (…/v1); requests are load-balanced")
    model: str = option("", doc="model name sent with each request")
    api_key_env: str = option("OPENAI_API_KEY", doc="environment variable holding the key ('' = none)")
    concurrency: int = option(16, ge=1, doc="requests in flight at once")
    requests_per_minute: float = option(0, ge=0, doc="0 = unlimited")
    tokens_per_minute: float = option(0, ge=0, doc="0 = unlimited")
    max_retries: int = option(8, ge=0)
    timeout_s: float = option(120, gt=0)
    backoff_base_s: float = option(1.0, gt=0)
    backoff_max_s: float = option(60.0, gt=0)
    temperature: float = option(0.0, ge=0)
    max_tokens: int = option(512, ge=1)
    price_per_1m_input: float = option(0.0, ge=0, doc="USD per million prompt tokens, for the cost report")
    price_per_1m_output: float = option(0.0, ge=0, doc="USD per million completion tokens")

    @property
    def enabled(self) -> bool:
        return bool(self.base_urls) and bool(self.model)
