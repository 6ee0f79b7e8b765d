"""configs/ablation.toml shrunk to seconds of work per run: the nano model, a
slice of the standard library, a few steps; two arms x two seeds."""

from __future__ import annotations

SHRINK = [
    'ingest.sources=[{kind = "python_tree", path = "", limit = 100}]',
    "ingest.executor.tasks=2",
    "annotate.samples=60",
    "embed.max_tokens=32",
    "classifier.n_estimators=20",
    "filter.threshold=0.3",
    "synth.textbooks=3",
    "tokenizer.vocab_size=384",
    "tokenize.seq_len=64",
    "model.preset=nano",
    "pretrain.max_steps=6",
    "pretrain.batch_size=8",
    "pretrain.micro_batch_size=8",
    "pretrain.warmup_steps=2",
    "pretrain.checkpoint_every=6",
    "pretrain.eval_every=6",
    "pretrain.eval_samples=8",
    "finetune.max_steps=2",
    "finetune.batch_size=8",
    "finetune.micro_batch_size=8",
    "finetune.warmup_steps=1",
    "finetune.checkpoint_every=2",
    "finetune.eval_every=2",
    "finetune.eval_samples=8",
    "generate.limit=4",
    "generate.max_new_tokens=4",
    "ablation.arms=['unfiltered', 'filtered', 'filtered+synthetic']",
    "ablation.seeds=[0, 1]",
]


def shrunk_args(root, name: str = "abl") -> list[str]:
    args = ["--set", f"run.root={root}", "--set", f"run.name={name}"]
    for s in SHRINK:
        args += ["--set", s]
    return args
