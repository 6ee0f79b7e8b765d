"""Who answers the synthetic-data prompts.

* `EndpointBackend`: any OpenAI-compatible endpoint (a hosted API, vLLM
  servers) through `phi1.llm.LLMClient`: its cache, limits, retries, load
  balancing, batch files and cost accounting. Replies cut at the token limit
  are re-asked with more tokens by the client (``[synth.llm] cut_retries``,
  ``cut_max_tokens_factor``).
* `LocalBackend`: a Hugging Face chat model loaded in this process with
  `phi1.evaluate.generate.TransformersGenerator` (the ``generate`` stage's
  batched generation), for one GPU and no server. Its replies go into the
  same response cache under the same kind of key, so a killed run resumes
  without generating anything twice, and are shaped like an endpoint's
  (``finish_reason`` "stop" or "length", token usage).

Both answer ``ask(requests) -> [LLMResult]`` in request order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from phi1.llm import ChatRequest, LLMConfig, LLMResult


class EndpointBackend:
    def __init__(self, cfg: LLMConfig, cache_path: Path | None, *, log: Callable[[str], None],
                 progress: bool = True, desc: str = "synth"):
        from phi1.llm import LLMClient

        self.cfg = cfg
        self.model = cfg.model
        self.progress = progress
        self.client = LLMClient(cfg, cache_path, desc=desc, log=log)

    def ask(self, requests: Sequence[ChatRequest]) -> list[LLMResult]:
        return asyncio.run(self.client.chat_many(list(requests), progress=self.progress, reask_cut=True))

    def import_batches(self) -> None:
        """Import ``batch_import`` files into the cache now (their cost counts in `usage`)."""
        asyncio.run(self.client.chat_many([], progress=False))

    @property
    def usage(self) -> dict[str, Any]:
        return self.client.usage

    def price(self, usage: dict[str, int]) -> float | None:
        return self.client.meter.price(usage)

    def close(self) -> None:
        self.client.close()


def chat_prompt(tokenizer: Any, messages: Sequence[dict[str, Any]]) -> str:
    """The text a local model continues: its chat template when it has one,
    else the messages' contents one after another."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    parts = [str(m.get("content", "")) for m in messages]
    return "\n\n".join(parts) + "\n\n"


class LocalBackend:
    """A local transformers model answering chat requests, with the response cache."""

    def __init__(self, model: str, cfg: LLMConfig, cache_path: Path | None, *, device: str = "auto",
                 dtype: str = "auto", batch_size: int = 8, log: Callable[[str], None], progress: bool = True,
                 seed: int = 0):
        from phi1.llm import ResponseCache

        self.folder = resolve_model_folder(model)
        # The model's identity goes into every request body, hence every cache key.
        self.cfg = dataclasses.replace(cfg, model=f"local:{self.folder.resolve()}")
        self.model = self.cfg.model
        self.batch_size = batch_size
        self.device, self.dtype = device, dtype
        self.log = log
        self.progress = progress
        self.seed = seed
        self.cache = ResponseCache(cache_path) if cache_path is not None else None
        self._generator: Any = None
        self.counts = {"requests": 0, "cache_hits": 0, "generated": 0, "prompt_tokens": 0,
                       "completion_tokens": 0, "cut_reasks": 0, "seconds": 0.0}

    def _gen(self) -> Any:
        if self._generator is None:
            from phi1.evaluate.generate import TransformersGenerator

            self._generator = TransformersGenerator(self.folder, device=self.device, precision=self.dtype)
            self.log(f"local model {self.folder} on {self._generator.device} ({self._generator.dtype})")
        return self._generator

    def ask(self, requests: Sequence[ChatRequest]) -> list[LLMResult]:
        requests = list(requests)
        results = self._ask(requests)
        for _ in range(self.cfg.cut_retries if self.cfg.cut_max_tokens_factor > 1 else 0):
            cut = [i for i, r in enumerate(results) if r.truncated]
            if not cut:
                break
            for i in cut:
                current = requests[i].max_tokens or self.cfg.max_tokens
                requests[i] = dataclasses.replace(
                    requests[i], max_tokens=math.ceil(current * self.cfg.cut_max_tokens_factor))
            self.counts["cut_reasks"] += len(cut)
            for i, res in zip(cut, self._ask([requests[i] for i in cut])):
                res.cut_reasks = results[i].cut_reasks + 1
                results[i] = res
        return results

    def _ask(self, requests: list[ChatRequest]) -> list[LLMResult]:
        from phi1.llm.schema import CHAT_PATH, parse_response, request_body, request_key

        bodies = [request_body(self.cfg, r) for r in requests]
        keys = [request_key(CHAT_PATH, b) for b in bodies]
        self.counts["requests"] += len(set(keys))
        found = self.cache.get_many(keys) if self.cache is not None else {}
        out: dict[str, LLMResult] = {}
        for k, data in found.items():
            texts, finish, usage = parse_response(CHAT_PATH, data)
            out[k] = LLMResult(texts, finish, usage or {}, None, True, k, 0)
        self.counts["cache_hits"] += len(out)
        todo: dict[str, dict[str, Any]] = {}
        for k, b in zip(keys, bodies):
            if k not in out:
                todo.setdefault(k, b)
        if todo:
            out.update(self._generate(todo))
        return [dataclasses.replace(out[k]) for k in keys]

    def _generate(self, todo: dict[str, dict[str, Any]]) -> dict[str, LLMResult]:
        from tqdm.auto import tqdm

        from phi1.llm.schema import CHAT_PATH

        gen = self._gen()
        field = self.cfg.max_tokens_field
        # batches share max_new_tokens and temperature; longest prompts first
        groups: dict[tuple[int, float], list[str]] = {}
        for k, b in todo.items():
            groups.setdefault((int(b[field]), float(b["temperature"])), []).append(k)
        out: dict[str, LLMResult] = {}
        bar = tqdm(total=len(todo), desc="synth (local model)", unit="req", disable=not self.progress,
                   mininterval=1.0)
        started = time.time()
        try:
            for (max_tokens, temperature), keys in groups.items():
                prompts = {k: chat_prompt(gen.tokenizer, todo[k]["messages"]) for k in keys}
                lengths = dict(zip(keys, gen.prompt_lengths([prompts[k] for k in keys])))
                keys = sorted(keys, key=lambda k: (-lengths[k], k))
                for s in range(0, len(keys), self.batch_size):
                    batch = keys[s:s + self.batch_size]
                    seed = int.from_bytes(hashlib.sha256(("|".join(batch) + f"|{self.seed}").encode())
                                          .digest()[:8], "big") & (2**63 - 1)
                    replies, _ = gen.generate([prompts[k] for k in batch], max_new_tokens=max_tokens,
                                              temperature=temperature, top_p=1.0, stops=[], seed=seed)
                    for k, (text, reason) in zip(batch, replies):
                        finish = "length" if reason == "length" else "stop"
                        usage = {"prompt_tokens": lengths[k],
                                 "completion_tokens": len(gen.tokenizer(text)["input_ids"])}
                        data = {"object": "chat.completion", "model": self.model,
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                             "finish_reason": finish}],
                                "usage": {**usage, "total_tokens": sum(usage.values())}}
                        if self.cache is not None:
                            self.cache.put(k, CHAT_PATH, todo[k], data)  # committed as it is made
                        out[k] = LLMResult([text], finish, usage, None, False, k, 1)
                        self.counts["generated"] += 1
                        self.counts["prompt_tokens"] += usage["prompt_tokens"]
                        self.counts["completion_tokens"] += usage["completion_tokens"]
                    bar.update(len(batch))
        finally:
            bar.close()
            self.counts["seconds"] += round(time.time() - started, 3)
        return out

    @property
    def usage(self) -> dict[str, Any]:
        return {"model": self.model, "backend": "transformers", **self.counts, "cost_usd": 0.0,
                "cost_basis": "local"}

    def price(self, usage: dict[str, int]) -> float | None:
        return 0.0

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def resolve_model_folder(model: str) -> Path:
    """A local model folder, or a hub name fetched into the Hugging Face cache."""
    from phi1.errors import InputError

    if not model:
        raise InputError("synth.backend = 'transformers' needs synth.local_model (a Hugging Face model folder "
                         "or hub name of a chat model)")
    p = Path(model).expanduser()
    if p.is_dir():
        return p
    if p.exists() or model.startswith((".", "/", "~")):
        raise InputError(f"synth.local_model: {model} is not a model folder")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model))
    except Exception as e:  # noqa: BLE001 - offline, unknown name, no access: one line
        raise InputError(f"synth.local_model = {model!r}: not a folder, and the hub did not give it "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
