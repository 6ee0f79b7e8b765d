"""Inputs the LLM tests share: a fast client config, a key to hunt for in outputs,
chat requests, and small documents whose prompts say which document they are."""

from __future__ import annotations

import re

from phi1.llm import ChatRequest, LLMConfig

FAST = dict(model="test-model", api_key_env="", backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
# A key with no lowercase hex and no common words, so any piece of it found in an output is a leak.
KEY = "sk-QZ7WKX9PMR4TVB8NJH2YLG6USD3FQC5XWZK"


def llm_cfg(*urls: str, **kw) -> LLMConfig:
    return LLMConfig(base_urls=list(urls), **{**FAST, **kw})


def chats(n: int, tag: str = "q") -> list[ChatRequest]:
    return [ChatRequest([{"role": "user", "content": f"{tag} {i}"}]) for i in range(n)]


def module_docs(n: int) -> list[dict]:
    """``n`` one-function modules; document ``i``'s text says "Module i."."""
    docs = []
    for i in range(n):
        text = f'"""Module {i}."""\n\n\ndef f{i}(x):\n    """Add {i} to x."""\n    return x + {i}\n'
        docs.append({"id": f"gen/m{i:03d}.py", "text": text,
                     "metadata": {"source": "gen", "path": f"m{i:03d}.py", "size": len(text)}})
    return docs


def doc_index(req) -> int:
    """Which of `module_docs` a request's prompt is about."""
    return int(re.search(r"Module (\d+)\.", req.prompt_text).group(1))
