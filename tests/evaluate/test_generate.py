"""`generate` with the transformers backend on a tiny, randomly initialised
PhiForCausalLM and a BPE tokenizer trained here (fp32, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.stages import mark_done
from phi1.config import load_config
from phi1.evaluate.generate import (
    TransformersGenerator,
    batch_seed,
    generate_transformers,
    plan_batches,
    plan_rows,
    read_progress,
)
from phi1.evaluate.stops import make_stopping_criteria

CORPUS = [
    'def add(a, b):\n    """Add two numbers."""\n    return a + b\n',
    "class Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "    if x > 0:\n        print(x)\n# a comment\n",
    "for i in range(10):\n    total += i\nreturn total\n",
]

PROMPTS = [
    'def add(a, b):\n    """Add two numbers."""\n',
    "def is_even(n: int) -> bool:\n    \"\"\"Return True if n is even.\n    >>> is_even(2)\n    True\n    \"\"\"\n",
    "def f(x):\n",
    "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum of xs.\"\"\"\n",
    "def g():\n    \"\"\"Nothing.\"\"\"\n",
]


def build_tiny_model(out: Path, seed: int = 0) -> Path:
    """A tokenizer folder (byte-level BPE, <|endoftext|> as eos) and a tiny
    random PhiForCausalLM saved the way the finetune stage exports them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(CORPUS * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    tok.save_pretrained(out)
    torch.manual_seed(seed)
    # A large init spread makes the logits peaked, so greedy argmaxes are far
    # from ties and batched == unbatched is a real check, not luck.
    cfg = PhiConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=512, initializer_range=0.5,
                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    PhiForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # The model is tiny: with other processes on the 2 cores, torch's intra-op
    # threads spin-wait on each other and every op takes ~15 ms instead of ~0.1.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def generator(model_dir) -> TransformersGenerator:
    # fp32: the behaviour tests below compare generations exactly
    return TransformersGenerator(model_dir, device="auto", precision="fp32")


def gen_cfg(*overrides: str):
    return load_config(None, list(overrides)).generate


def problems_of(prompts=PROMPTS):
    return [{"task_id": f"T/{i}", "prompt": p, "canonical_solution": "    pass\n", "test": "", "entry_point": "f"}
            for i, p in enumerate(prompts)]


def test_loads_fp32_on_cpu_with_left_padding(generator):
    assert generator.device == "cpu" and generator.dtype == "float32" and generator.precision == "fp32"
    assert next(generator.model.parameters()).dtype == torch.float32
    assert generator.tokenizer.padding_side == "left"
    assert generator.tokenizer.pad_token == "<|endoftext|>"  # none in the folder: eos is used


def test_auto_precision_follows_what_the_cpu_reports(model_dir):
    from phi1.devices import cpu_bf16_support

    native, why = cpu_bf16_support()
    auto = TransformersGenerator(model_dir, device="cpu", precision="auto")
    assert auto.precision == ("bf16" if native else "fp32") and auto.precision_reason == f"auto: {why}"
    assert next(auto.model.parameters()).dtype == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(Exception, match="generate.precision = 'fp16' needs a GPU"):
        TransformersGenerator(model_dir, device="cpu", precision="fp16")


def test_bf16_greedy_generations_mostly_match_fp32(generator, model_dir, record_property):
    """bf16 changes the arithmetic, so a greedy argmax can flip and the rest of
    that generation differs: most generations must stay identical, and nearly
    every first token (before any divergence can compound)."""
    from phi1.evaluate.problems import load_problems

    prompts = [p.prompt for p in list(load_problems("humaneval").values())[:40]] + PROMPTS
    bf16 = TransformersGenerator(model_dir, device="cpu", precision="bf16")
    kw = dict(max_new_tokens=24, temperature=0.0, top_p=1.0, stops=[], seed=0)
    ref = [t for t, _ in generator.generate(prompts, **kw)[0]]
    got = [t for t, _ in bf16.generate(prompts, **kw)[0]]
    tok = generator.tokenizer
    first = [tok(a)["input_ids"][:1] == tok(b)["input_ids"][:1] for a, b in zip(ref, got)]
    identical = sum(a == b for a, b in zip(ref, got)) / len(prompts)
    record_property("bf16_greedy_identical_share", identical)
    print(f"\nbf16 vs fp32 greedy (24 new tokens, {len(prompts)} prompts, random tiny model): "
          f"{identical:.0%} identical, first token {sum(first) / len(first):.0%}")
    assert identical >= 0.5
    assert sum(first) / len(first) >= 0.9

def test_batched_left_padded_greedy_equals_unbatched(generator):
    batched, _ = generator.generate(PROMPTS, max_new_tokens=20, temperature=0, top_p=1, stops=[], seed=0)
    assert len({len(ids) for ids in generator.tokenizer(PROMPTS)["input_ids"]}) > 1  # really padded
    for prompt, got in zip(PROMPTS, batched):
        alone, _ = generator.generate([prompt], max_new_tokens=20, temperature=0, top_p=1, stops=[], seed=0)
        assert alone[0] == got
    assert any(reason == "length" for _, reason in batched)


def _ascii_stop(text: str) -> str:
    """Two printable ASCII characters from the middle of a generated text."""
    for i in range(3, len(text) - 1):
        pair = text[i:i + 2]
        if pair.isascii() and pair.isprintable() and text.find(pair) == i:
            return pair
    pytest.skip("the random model produced no ASCII pair to use as a stop")


def test_stop_sequence_ends_generation_and_is_cut(generator):
    free, _ = generator.generate(PROMPTS[:1], max_new_tokens=30, temperature=0, top_p=1, stops=[], seed=0)
    text = free[0][0]
    stop = _ascii_stop(text)
    stopped, _ = generator.generate(PROMPTS[:1], max_new_tokens=30, temperature=0, top_p=1, stops=[stop], seed=0)
    got, reason = stopped[0]
    assert reason == "stop"
    assert stop in got and text.startswith(got) and len(got) < len(text)  # generation ended early
    cfg = gen_cfg(f"generate.stop={json.dumps([stop])}", "generate.max_new_tokens=30",
                  "generate.strip_prompt=false")
    [rec] = _run_rows(generator, problems_of(PROMPTS[:1]), cfg)
    assert rec.completion == text[:text.index(stop)] and rec.finish_reason == "stop"


def test_stopping_criteria_flags_rows_independently(generator):
    tok = generator.tokenizer
    pad = tok.pad_token_id
    prompts = [tok(p)["input_ids"] for p in ("x = 1\n", "def f(a, b):\n")]
    texts = ("    return 1\ndef g(): pass\n", "    y = 2\n    return y  # no def here\n")
    gens = [tok(t)["input_ids"] for t in texts]
    plen, glen = max(map(len, prompts)), max(map(len, gens))
    ids = torch.tensor([[pad] * (plen - len(p)) + p + g + [pad] * (glen - len(g)) for p, g in zip(prompts, gens)])

    def first_stop_step(stops):
        """Call the criterion as generate does, one new token at a time."""
        crit, first = make_stopping_criteria(tok, prompt_len=plen, stops=stops), [None, None]
        for step in range(1, glen + 1):
            for row, flag in enumerate(crit(ids[:, :plen + step], None).tolist()):
                if flag and first[row] is None:
                    first[row] = step
                assert flag or first[row] is None  # a finished row stays finished
        return first

    # Row 0 stops at the first step whose generated text contains "\ndef"; row 1 never does.
    step = next(k for k in range(1, glen + 1) if "\ndef" in tok.decode(gens[0][:k]))
    assert first_stop_step(["\ndef"]) == [step, None]
    # A stop inside the prompt does not count: only generated text is checked.
    assert first_stop_step(["x = 1", "def f"]) == [None, None]


def _run_rows(generator, problems, cfg, tmp=None, seed=0, rank=0, world_size=1, resume=False):
    import tempfile

    work = Path(tmp or tempfile.mkdtemp())
    return generate_transformers(generator, problems, cfg, seed=seed, work_dir=work, rank=rank,
                                 world_size=world_size, resume=resume, log=lambda m: None)


def test_sampling_is_seeded_and_independent_of_ranks(generator, tmp_path):
    cfg = gen_cfg("generate.temperature=1.0", "generate.top_p=0.9", "generate.n_samples=3",
                  "generate.batch_size=4", "generate.max_new_tokens=12", "generate.stop=[]")
    problems = problems_of()
    one = _run_rows(generator, problems, cfg, tmp_path / "a", seed=7)
    again = _run_rows(generator, problems, cfg, tmp_path / "b", seed=7)
    other_seed = _run_rows(generator, problems, cfg, tmp_path / "c", seed=8)
    assert len(one) == len(problems) * 3
    assert [g.text for g in one] == [g.text for g in again]
    assert [g.text for g in one] != [g.text for g in other_seed]
    assert len({g.text for g in one}) > len(problems)  # samples of a task differ
    # Two ranks sharing a folder (rank 1 first, then rank 0 merges): same samples.
    shared = tmp_path / "two"
    assert _run_rows(generator, problems, cfg, shared, seed=7, rank=1, world_size=2) is None
    two = _run_rows(generator, problems, cfg, shared, seed=7, rank=0, world_size=2)
    assert [(g.task_id, g.index, g.text) for g in two] == [(g.task_id, g.index, g.text) for g in one]
    assert {json.loads(l)["rank"] for l in (shared / "batches.jsonl").read_text().splitlines()} == {0, 1}


def test_resume_skips_committed_batches_and_redoes_a_torn_one(generator, tmp_path):
    cfg = gen_cfg("generate.temperature=0.8", "generate.n_samples=2", "generate.batch_size=3",
                  "generate.max_new_tokens=8", "generate.stop=[]")
    problems = problems_of()
    first = _run_rows(generator, problems, cfg, tmp_path, seed=1)
    progress = tmp_path / "progress" / "rank-00000.jsonl"
    lines = progress.read_text().splitlines(keepends=True)
    # Keep the first two committed batches and tear the third mid-line.
    trailers = [i for i, l in enumerate(lines) if '"rows"' in l]
    progress.write_text("".join(lines[: trailers[1] + 1]) + lines[trailers[1] + 1][:15])
    assert len(read_progress(progress.parent)[1]) == 2
    calls = []
    real = generator.generate
    generator.generate = lambda prompts, **kw: (calls.append(len(prompts)), real(prompts, **kw))[1]
    try:
        resumed = _run_rows(generator, problems, cfg, tmp_path, seed=1, resume=True)
    finally:
        del generator.generate
    assert sum(calls) == len(first) - 6  # two batches of 3 were not generated again
    assert [g.text for g in resumed] == [g.text for g in first]


def test_plan_sorts_by_length_and_seeds_by_content():
    batches = plan_batches([3, 9, 1, 9, 5], batch_size=2)
    assert batches == [[1, 3], [4, 0], [2]]
    rows = plan_rows(problems_of(), gen_cfg("generate.n_samples=4"))
    assert len(rows) == len(PROMPTS)  # greedy: one row per task, copied at the end
    rows = plan_rows(problems_of(), gen_cfg("generate.n_samples=4", "generate.temperature=0.2"))
    assert len(rows) == 4 * len(PROMPTS)
    assert batch_seed(0, rows[:2]) == batch_seed(0, rows[:2]) != batch_seed(1, rows[:2])
    assert batch_seed(0, rows[:2]) != batch_seed(0, rows[2:4])




def test_stage_through_cli_on_humaneval(tmp_path, capsys):
    from phi1.cli import main
    from phi1.documents import read_jsonl
    from phi1.evaluate.config import DEFAULT_STOPS
    from phi1.evaluate.problems import load_problems
    from phi1.pipeline import read_manifest

    config = tmp_path / "run.toml"
    config.write_text(f"""
[run]
root = "{tmp_path / 'runs'}"
name = "tiny"

[generate]
limit = 3
n_samples = 2
max_new_tokens = 24
batch_size = 2
""")
    cfg = load_config(config)
    build_tiny_model(mark_done(cfg, "finetune") / "model")
    assert main(["generate", "--config", str(config)]) == 0
    out = cfg.run_dir / "generate"
    expected = list(load_problems("humaneval").values())[:3]
    assert [p["task_id"] for p in read_jsonl(out / "problems.jsonl")] == [p.task_id for p in expected]
    samples = list(read_jsonl(out / "samples.jsonl"))
    assert [s["task_id"] for s in samples] == [p.task_id for p in expected for _ in range(2)]
    assert samples[0] == samples[1]  # greedy: the n copies are the same
    for s in samples:
        assert set(s) == {"task_id", "completion"}
        assert not any(stop in s["completion"] for stop in DEFAULT_STOPS)
    m = read_manifest(out)
    gen = m["generation"]
    from phi1.devices import resolve_precision

    precision, why = resolve_precision("auto", "cpu")
    assert gen["backend"] == "transformers" and gen["device"] == "cpu"
    assert gen["precision"] == precision and gen["precision_reason"] == why  # the default is auto
    assert gen["dtype"] == {"bf16": "bfloat16", "fp32": "float32"}[precision]
    assert gen["batch_size"] == 2 and gen["seed"] == 0 and gen["n_samples"] == 2 and gen["temperature"] == 0
    assert gen["model"] == str(cfg.run_dir / "finetune" / "model")
    batches = list(read_jsonl(out / "batches.jsonl"))
    assert [len(b["rows"]) for b in batches] == [2, 1]  # 3 greedy rows, longest prompts first
    assert batches[0]["prompt_tokens"][0] >= batches[1]["prompt_tokens"][0]
    assert m["counts"]["samples"] == 6 and m["counts"]["generated"] == 3
    printed = capsys.readouterr().out
    assert "6 samples for 3 problems" in printed and f"{precision} on cpu: {why}" in printed
    # Current: a second invocation does nothing.
    assert main(["generate", "--config", str(config)]) == 0
    assert "generate: up to date" in capsys.readouterr().out


def test_missing_model_folder_is_one_clear_line(tmp_path, capsys):
    from phi1.cli import main

    config = tmp_path / "run.toml"
    config.write_text(f'[run]\nroot = "{tmp_path}"\nname = "x"\n[generate]\nlimit = 1\n')
    mark_done(load_config(config), "finetune")
    assert main(["generate", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "has no config.json" in err and "finetune/model" in err


def test_prompt_longer_than_context_keeps_its_end(generator):
    """Positions past the trained context would extrapolate rotary: a prompt is
    cut from the left so prompt + max_new_tokens fits the model's context."""
    context = generator.context
    long_prompt = "# filler line\n" * context + PROMPTS[0]
    assert generator.prompt_lengths([long_prompt])[0] > context
    (text, _reason), = generator.generate([long_prompt], max_new_tokens=8, temperature=0.0, top_p=1.0,
                                          stops=[], seed=0)[0]
    # Same continuation as the prompt's last (context - 8) tokens alone.
    ids = generator.tokenizer(long_prompt)["input_ids"][-(context - 8):]
    tail = generator.tokenizer.decode(ids)
    (expected, _), = generator.generate([tail], max_new_tokens=8, temperature=0.0, top_p=1.0, stops=[], seed=0)[0]
    assert text == expected
    with pytest.raises(Exception, match="leaves no room"):
        generator.generate([PROMPTS[0]], max_new_tokens=context, temperature=0.0, top_p=1.0, stops=[], seed=0)
