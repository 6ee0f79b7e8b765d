"""Config for an OpenAI-compatible endpoint (used inside annotate, generate, grade)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from phi1.sections import option


@dataclass
class LLMConfig:
    """An OpenAI-compatible endpoint (OpenAI, vLLM, TGI, llama.cpp server, Ollama).

    The API key is read from the environment variable named by ``api_key_env``
    at send time; it never appears in configs, manifests, logs or the cache.
    """

    base_urls: list[str] = option([], doc="one or more base URLs (…/v1); requests are load-balanced")
    model: str = option("", doc="model name sent with each request")
    api_key_env: str = option("OPENAI_API_KEY", doc="environment variable holding the key ('' = none)")
    concurrency: int = option(16, ge=1, doc="requests in flight at once (all endpoints together)")
    requests_per_minute: float = option(0, ge=0, doc="0 = unlimited")
    tokens_per_minute: float = option(0, ge=0, doc="prompt + max_tokens, estimated before sending; 0 = unlimited")
    max_retries: int = option(8, ge=0, doc="retries of one request on 429, 5xx, timeouts, dropped connections")
    timeout_s: float = option(120, gt=0, doc="per HTTP request")
    backoff_base_s: float = option(1.0, gt=0, doc="exponential backoff with full jitter: U(0, base * 2^attempt)")
    backoff_max_s: float = option(60.0, gt=0, doc="cap of one backoff sleep (a server's Retry-After wins)")
    load_balance: Literal["least_busy", "round_robin"] = option("least_busy", doc="how base_urls share the work")
    endpoint_max_failures: int = option(3, ge=1, doc="consecutive failures before an endpoint is set aside")
    endpoint_cooldown_s: float = option(30.0, ge=0, doc="how long a failing endpoint is skipped while others work")
    temperature: float = option(0.0, ge=0)
    max_tokens: int = option(512, ge=1)
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = option(
        "max_tokens", doc="request field for the reply length (OpenAI reasoning models want max_completion_tokens)")
    price_per_1m_input: float = option(0.0, ge=0, doc="USD per million prompt tokens, for the cost report")
    price_per_1m_output: float = option(0.0, ge=0, doc="USD per million completion tokens")
    batch_price_factor: float = option(0.5, ge=0, doc="cost of imported Batch API replies relative to live ones")
    cache: str = option("", doc="SQLite response cache ('' = <run dir>/cache/llm.sqlite, 'off' = none)")
    batch_export: str = option("", doc="write requests missing from the cache to this Batch API JSONL "
                               "instead of sending them, and stop the stage")
    batch_import: list[str] = option([], doc="Batch API output JSONL files imported into the cache first")

    @property
    def enabled(self) -> bool:
        return bool(self.base_urls) and bool(self.model)
