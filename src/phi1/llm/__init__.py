"""OpenAI-compatible LLM client shared by every stage that calls a model endpoint.

Public API (imported lazily, so ``phi1.llm.config`` stays cheap for the config loader)::

    LLMConfig                      the [<stage>.llm] config section
    ChatRequest, CompletionRequest, LLMResult
    LLMClient(cfg, cache_path, desc=, log=)   .chat_many / .complete_many (async; reask_cut=),
                                   .usage, .close()
    run_chat, run_completions      blocking wrappers -> (results, usage)
    resolve_cache_path(cfg, run_dir)
    describe_usage(usage)          the one summary line: requests, tokens, cost (and how sure)
    final_number(reply, labels, scale)   a well-delimited final score/grade, or why there is none
    Redactor                       redact-then-cut for any text that may quote the key
    ResponseCache, export_batch, import_batch_output, BatchExported

docs/llm-client.md says what the client guarantees and how each guarantee is tested.
"""

from __future__ import annotations

from typing import Any

from phi1.llm.config import LLMConfig

_LAZY = {
    "ChatRequest": "phi1.llm.schema",
    "CompletionRequest": "phi1.llm.schema",
    "LLMResult": "phi1.llm.schema",
    "request_body": "phi1.llm.schema",
    "request_key": "phi1.llm.schema",
    "LLMClient": "phi1.llm.client",
    "run_chat": "phi1.llm.client",
    "run_completions": "phi1.llm.client",
    "resolve_cache_path": "phi1.llm.client",
    "ResponseCache": "phi1.llm.cache",
    "export_batch": "phi1.llm.batch",
    "import_batch_output": "phi1.llm.batch",
    "read_batch_output": "phi1.llm.batch",
    "BatchExported": "phi1.llm.batch",
    "RateLimiter": "phi1.llm.limits",
    "describe_usage": "phi1.llm.usage",
    "UsageMeter": "phi1.llm.usage",
    "final_number": "phi1.llm.answers",
    "FinalNumber": "phi1.llm.answers",
    "Redactor": "phi1.llm.redact",
    "EndpointPool": "phi1.llm.endpoints",
}

__all__ = ["LLMConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'phi1.llm' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
