"""Token usage, request counts and cost of one client's work, for manifests."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class UsageMeter:
    price_per_1m_input: float = 0.0
    price_per_1m_output: float = 0.0
    batch_price_factor: float = 0.5
    requests: int = 0  # distinct requests asked for
    cache_hits: int = 0  # answered from the cache (free now)
    sent: int = 0  # HTTP attempts, retries included
    responses: int = 0  # successful live replies
    retries: int = 0
    errors: int = 0  # requests that ended without a reply
    prompt_tokens: int = 0  # billed by live replies in this run
    completion_tokens: int = 0
    usage_missing: int = 0  # replies without a usage object (tokens estimated)
    failures: Counter = field(default_factory=Counter)  # why attempts failed: "429", "timeout", ...
    batch_exported: int = 0
    batch_imported: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0

    def add_live(self, usage: dict[str, int]) -> None:
        self.responses += 1
        self.prompt_tokens += usage.get("prompt_tokens", 0)
        self.completion_tokens += usage.get("completion_tokens", 0)

    def add_batch(self, usage: dict[str, int]) -> None:
        self.batch_imported += 1
        self.batch_prompt_tokens += usage.get("prompt_tokens", 0)
        self.batch_completion_tokens += usage.get("completion_tokens", 0)

    def _price(self, prompt: int, completion: int) -> float:
        return (prompt * self.price_per_1m_input + completion * self.price_per_1m_output) / 1e6

    @property
    def cost_usd(self) -> float:
        """Live replies at list price plus imported batch replies at the batch discount."""
        live = self._price(self.prompt_tokens, self.completion_tokens)
        batch = self._price(self.batch_prompt_tokens, self.batch_completion_tokens) * self.batch_price_factor
        return round(live + batch, 6)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "sent": self.sent,
            "responses": self.responses,
            "retries": self.retries,
            "errors": self.errors,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "failures": dict(sorted(self.failures.items())),
        }
        if self.usage_missing:
            out["usage_missing"] = self.usage_missing
        if self.batch_exported or self.batch_imported:
            out["batch"] = {
                "exported": self.batch_exported,
                "imported": self.batch_imported,
                "prompt_tokens": self.batch_prompt_tokens,
                "completion_tokens": self.batch_completion_tokens,
            }
        return out
