"""Token usage, request counts and cost of one client's work, for manifests.

Cost is never a confident number it is not: tokens the server did not report
are estimated (~4 characters a token) and counted apart, and the cost says
how it was reached (``cost_basis``):

* ``reported`` — every bought reply carried its usage: exact at the configured prices;
* ``estimated`` — some replies carried none; their tokens were estimated;
* ``unpriced`` — replies were bought but no price is configured: ``cost_usd`` is None;
* ``none`` — nothing was bought (all from the cache): ``cost_usd`` is 0.
"""

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
    not_sent: int = 0  # of those, never sent: every endpoint refused the setup, or the client gave up
    prompt_tokens: int = 0  # billed by live replies in this run, as reported
    completion_tokens: int = 0
    usage_missing: int = 0  # live or batch replies without a usage object (tokens estimated)
    estimated_prompt_tokens: int = 0  # live replies without usage: estimated
    estimated_completion_tokens: int = 0
    cut_reasks: int = 0  # re-asks of replies cut at the token limit
    failures: Counter = field(default_factory=Counter)  # why attempts failed: "429", "timeout", ...
    batch_exported: int = 0
    batch_imported: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    batch_estimated_prompt_tokens: int = 0
    batch_estimated_completion_tokens: int = 0

    def add_live(self, usage: dict[str, int], estimated: bool = False) -> None:
        self.responses += 1
        if estimated:
            self.usage_missing += 1
            self.estimated_prompt_tokens += usage.get("prompt_tokens", 0)
            self.estimated_completion_tokens += usage.get("completion_tokens", 0)
        else:
            self.prompt_tokens += usage.get("prompt_tokens", 0)
            self.completion_tokens += usage.get("completion_tokens", 0)

    def add_batch(self, usage: dict[str, int] | None) -> None:
        """A newly imported batch reply; ``None``: it had no usage (see `add_batch_estimate`)."""
        self.batch_imported += 1
        if usage is None:
            self.usage_missing += 1
            return
        self.batch_prompt_tokens += usage.get("prompt_tokens", 0)
        self.batch_completion_tokens += usage.get("completion_tokens", 0)

    def add_batch_estimate(self, usage: dict[str, int]) -> None:
        """Estimated tokens of an imported batch reply without usage, once its request is known."""
        self.batch_estimated_prompt_tokens += usage.get("prompt_tokens", 0)
        self.batch_estimated_completion_tokens += usage.get("completion_tokens", 0)

    @property
    def priced(self) -> bool:
        return self.price_per_1m_input > 0 or self.price_per_1m_output > 0

    @property
    def bought(self) -> bool:
        return self.responses > 0 or self.batch_imported > 0

    def price(self, usage: dict[str, int]) -> float | None:
        """List price of one reply's tokens; None when no price is configured."""
        if not self.priced:
            return None
        return self._price(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))

    def _price(self, prompt: int, completion: int) -> float:
        return (prompt * self.price_per_1m_input + completion * self.price_per_1m_output) / 1e6

    @property
    def cost_basis(self) -> str:
        if not self.bought:
            return "none"
        if not self.priced:
            return "unpriced"
        return "estimated" if self.usage_missing else "reported"

    @property
    def cost_usd(self) -> float | None:
        """Live replies at list price plus imported batch replies at the batch
        discount, estimated tokens included; None when replies were bought and
        no price is configured."""
        basis = self.cost_basis
        if basis == "none":
            return 0.0
        if basis == "unpriced":
            return None
        live = self._price(self.prompt_tokens + self.estimated_prompt_tokens,
                           self.completion_tokens + self.estimated_completion_tokens)
        batch = self._price(self.batch_prompt_tokens + self.batch_estimated_prompt_tokens,
                            self.batch_completion_tokens + self.batch_estimated_completion_tokens)
        return round(live + batch * self.batch_price_factor, 6)

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
            "cost_basis": self.cost_basis,
            "failures": dict(sorted(self.failures.items())),
        }
        if self.not_sent:
            out["not_sent"] = self.not_sent
        if self.usage_missing:
            out["usage_missing"] = self.usage_missing
            out["estimated_prompt_tokens"] = self.estimated_prompt_tokens + self.batch_estimated_prompt_tokens
            out["estimated_completion_tokens"] = (self.estimated_completion_tokens
                                                  + self.batch_estimated_completion_tokens)
        if self.cut_reasks:
            out["cut_reasks"] = self.cut_reasks
        if self.batch_exported or self.batch_imported:
            out["batch"] = {
                "exported": self.batch_exported,
                "imported": self.batch_imported,
                "prompt_tokens": self.batch_prompt_tokens,
                "completion_tokens": self.batch_completion_tokens,
            }
        return out


def describe_usage(usage: dict[str, Any]) -> str:
    """One line about a client's usage (`LLMClient.usage`) for a stage summary:
    requests, tokens, and the cost with how sure it is."""
    tokens = usage.get("prompt_tokens", 0) + usage.get("estimated_prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0) + usage.get("estimated_completion_tokens", 0)
    batch = usage.get("batch") or {}
    tokens += batch.get("prompt_tokens", 0)
    completion += batch.get("completion_tokens", 0)
    missing = usage.get("usage_missing", 0)
    line = (f"llm {usage.get('model', '?')}: {usage.get('sent', 0)} requests sent "
            f"({usage.get('retries', 0)} retries), {usage.get('cache_hits', 0)} from cache")
    if batch.get("imported"):
        line += f", {batch['imported']} imported from batch files"
    if usage.get("not_sent"):
        line += f", {usage['not_sent']} not sent (the endpoint refused the setup or stopped answering)"
    line += f", {tokens:,} prompt + {completion:,} completion tokens"
    if missing:
        line += f" ({missing} replies without usage: their tokens estimated)"
    basis, cost = usage.get("cost_basis"), usage.get("cost_usd")
    if basis == "unpriced":
        line += ", cost unknown (no price_per_1m_input/output configured)"
    elif basis == "estimated":
        line += f", ~${cost:.4f} (estimated)"
    elif cost is not None:
        line += f", ${cost:.4f}"
    return line
