"""Config for an OpenAI-compatible endpoint (the ``[<stage>.llm]`` section of
annotate, generate, grade and synth).

Fields marked ``execution=True`` change how requests travel (endpoints,
limits, retries, prices, the cache, batch files), never which replies a stage
gets: they are left out of the stage's identity hash. The model, the sampling
parameters and the cut-reply policy change the replies, so they are hashed.
"""

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

    base_urls: list[str] = option(
        [], execution=True, doc="one or more base URLs (…/v1); requests are load-balanced")
    model: str = option("", doc="model name sent with each request")
    api_key_env: str = option(
        "OPENAI_API_KEY", execution=True, doc="environment variable holding the key ('' = none)")
    concurrency: int = option(
        16, ge=1, execution=True,
        doc="most requests in flight at once (all endpoints together); each endpoint starts at 8 and grows as "
        "replies come, and halves on timeouts, 429 and 503, so an endpoint is not sent more than it can take")
    requests_per_minute: float = option(0, ge=0, execution=True, doc="0 = unlimited")
    tokens_per_minute: float = option(
        0, ge=0, execution=True, doc="prompt + max_tokens, estimated before sending; 0 = unlimited")
    max_retries: int = option(
        8, ge=0, execution=True,
        doc="retries of one request on 429, 408, 409, 5xx, timeouts, dropped connections, malformed replies")
    timeout_s: float = option(
        120, gt=0, execution=True,
        doc="deadline of one attempt: connecting, sending and reading the whole reply (a server that "
        "trickles its reply is cut off here)")
    backoff_base_s: float = option(
        1.0, gt=0, execution=True, doc="exponential backoff with full jitter: U(0, base * 2^attempt)")
    backoff_max_s: float = option(
        60.0, gt=0, execution=True, doc="cap of one backoff sleep (a server's Retry-After wins)")
    retry_after_max_s: float = option(
        60.0, gt=0, execution=True,
        doc="longest wait a server's Retry-After can impose: longer ones are capped to it, non-finite ones "
        "ignored (the OpenAI SDK ignores values over 60 s)")
    give_up_after_s: float = option(
        600.0, ge=0, execution=True,
        doc="stop sending when no attempt has succeeded for this long (an endpoint that went dead): the "
        "requests not yet answered fail at once and a plain re-run asks them again; 0 = never give up")
    max_reply_mb: float = option(
        16.0, gt=0, execution=True,
        doc="largest reply body read, in MiB (after decompression): a longer or endless body is abandoned and "
        "the attempt retried (failure 'too_large'), so a hostile server cannot fill memory")
    load_balance: Literal["least_busy", "round_robin"] = option(
        "least_busy", execution=True, doc="how base_urls share the work")
    endpoint_max_failures: int = option(
        3, ge=1, execution=True, doc="consecutive failures before an endpoint is set aside")
    endpoint_cooldown_s: float = option(
        30.0, ge=0, execution=True, doc="how long a failing endpoint is skipped while others work")
    temperature: float = option(0.0, ge=0)
    max_tokens: int = option(512, ge=1)
    max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = option(
        "max_tokens", doc="request field for the reply length (OpenAI reasoning models want max_completion_tokens)")
    cut_retries: int = option(
        1, ge=0, doc="stages that need a whole reply (annotate, grade, synth): re-asks of a reply cut at the "
        "token limit (finish_reason 'length'), each with more tokens, before it counts as invalid")
    cut_max_tokens_factor: float = option(
        2.0, ge=1.0, doc="each re-ask of a cut reply allows this many times the previous max_tokens "
        "(1 = no re-ask: the same request would be cut again)")
    price_per_1m_input: float = option(
        0.0, ge=0, execution=True, doc="USD per million prompt tokens, for the cost report")
    price_per_1m_output: float = option(0.0, ge=0, execution=True, doc="USD per million completion tokens")
    batch_price_factor: float = option(
        0.5, ge=0, execution=True, doc="cost of imported Batch API replies relative to live ones")
    cache: str = option(
        "", execution=True, doc="SQLite response cache ('' = <run dir>/cache/llm.sqlite, 'off' = none)")
    batch_export: str = option(
        "", execution=True,
        doc="write requests missing from the cache to this Batch API JSONL instead of sending them, and stop "
        "the stage")
    batch_import: list[str] = option(
        [], execution=True, doc="Batch API output JSONL files imported into the cache first")

    @property
    def enabled(self) -> bool:
        return bool(self.base_urls) and bool(self.model)
