"""`synth.backend = "transformers"`: a local chat model answers in-process, through the
same response cache (a re-run generates nothing), with endpoint-shaped replies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from quality.quality_fixtures import tiny_causal_lm_dir

from phi1.config import load_config
from phi1.llm import ChatRequest, LLMConfig
from phi1.manifest import read_manifest
from phi1.pipeline import Pipeline
from phi1.synth.backends import LocalBackend, chat_prompt

TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only spin on a shared 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory) -> Path:
    """The tiny random Phi model with a chat template added to its tokenizer."""
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("chat") / "model"
    shutil.copytree(tiny_causal_lm_dir(), folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    return folder


def test_chat_prompt_uses_the_template_when_there_is_one(chat_model):
    from transformers import AutoTokenizer

    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert chat_prompt(AutoTokenizer.from_pretrained(chat_model), msgs) == "<|system|>S\n<|user|>U\n<|assistant|>"
    assert chat_prompt(AutoTokenizer.from_pretrained(tiny_causal_lm_dir()), msgs) == "S\n\nU\n\n"


def test_local_replies_are_cached_and_shaped_like_an_endpoints(chat_model, tmp_path):
    cfg = LLMConfig(max_tokens=8, cut_retries=1, cut_max_tokens_factor=2.0)
    reqs = [ChatRequest([{"role": "user", "content": f"question {i}"}], max_tokens=8) for i in range(3)]
    backend = LocalBackend(str(chat_model), cfg, tmp_path / "cache.sqlite", device="cpu", dtype="float32",
                           batch_size=2, log=lambda s: None, progress=False)
    try:
        first = backend.ask(reqs)
        assert all(r.ok and r.finish_reason in ("stop", "length") and r.usage["completion_tokens"] > 0
                   for r in first)
        generated = backend.counts["generated"]
        # a random model runs to the limit: cut, re-asked once with twice the tokens
        assert backend.counts["cut_reasks"] == sum(r.cut_reasks for r in first)
        assert generated == len(reqs) + backend.counts["cut_reasks"]
    finally:
        backend.close()
    again = LocalBackend(str(chat_model), cfg, tmp_path / "cache.sqlite", device="cpu", dtype="float32",
                         batch_size=2, log=lambda s: None, progress=False)
    try:
        second = again.ask(reqs)
        assert [r.text for r in second] == [r.text for r in first] and all(r.cached for r in second)
        assert again.counts["generated"] == 0 and again._generator is None  # the model is never loaded
    finally:
        again.close()


def test_synth_stage_with_a_local_model(chat_model, tmp_path):
    overrides = [f"run.root={tmp_path / 'runs'}", "run.name=local", "synth.exercises=3", "synth.textbooks=2",
                 "synth.backend=transformers", f"synth.local_model={chat_model}", "synth.device=cpu",
                 "synth.dtype=float32", "synth.exercise_max_tokens=16", "synth.textbook_max_tokens=16",
                 "synth.diversity_sample=0", "synth.batch_size=4"]
    cfg = load_config(None, overrides)
    Pipeline(cfg, echo=lambda s: None).run(only=["synth"])
    m = read_manifest(cfg.run_dir / "synth")
    c, usage = m["counts"], m["metrics"]["llm"]
    # random tokens: every reply is dropped, each for one counted reason
    for kind, n in (("exercises", 3), ("textbooks", 2)):
        dropped = sum(v for k, v in c.items() if k.startswith(f"{kind}_dropped_"))
        assert c[f"{kind}_kept"] + dropped == c[f"{kind}_asked"] == n
    assert usage["backend"] == "transformers" and usage["generated"] >= 5 and usage["cost_usd"] == 0.0
    Pipeline(cfg, echo=lambda s: None).run(only=["synth"], force=True)
    m2 = read_manifest(cfg.run_dir / "synth")
    assert m2["metrics"]["llm"]["generated"] == 0 and m2["counts"] == c  # all from the cache, same result
