"""Training phases for the resharding test: each trains the nano model with
`phi1.train.loop.train` to some step under some parallelism, resuming from
whatever checkpoint its folder holds. Run in-process (single) or under
torchrun (every rank runs the same phases: DDP or FSDP2 with gloo).

    python -m torch.distributed.run --nproc_per_node 2 resume_worker.py PLAN.json
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch


def run_phase(phase: dict, tokenized: Path) -> None:
    from phi1.model.config import ModelConfig
    from phi1.model.presets import build_model, model_flops, phi_config, resolve_shape
    from phi1.train.config import PretrainConfig
    from phi1.train.data import TokenRows
    from phi1.train.distributed import barrier, distributed_env
    from phi1.train.loop import TrainInputs, train
    from phi1.train.packing import PackedDataset

    rows = PackedDataset(tokenized, "train")
    cfg = PretrainConfig(max_steps=phase["max_steps"], decay_steps=4, batch_size=4, micro_batch_size=2, lr=3e-3,
                         warmup_steps=2, checkpoint_every=2, keep_checkpoints=5, eval_every=1000, log_every=1,
                         humaneval_loss=False, tensorboard=False, precision="fp32", peak_flops=1e12, compile=False,
                         parallel=phase["parallel"], checkpoint_format=phase.get("format", "auto"))
    work = Path(phase["dir"])
    with distributed_env("cpu") as env:
        if env.is_main and phase.get("copy_from"):  # start from another run's checkpoint
            src = Path(phase["copy_from"])
            shutil.copytree(src, work / "checkpoints" / src.name)
        barrier(env)
        config = phi_config(resolve_shape(ModelConfig(preset="nano"), seq_len=rows.seq_len), rows.vocab_size)
        torch.manual_seed(0)
        model = build_model(config)
        outcome = train(model, cfg, env, TrainInputs(TokenRows(rows), pad_id=rows.eot_id), work_dir=work, seed=0,
                        flops=model_flops(config), resume=True, name=phase["parallel"], echo=print)
        if env.is_main:
            (work / "outcome.json").write_text(json.dumps({"parallel": outcome.parallel, "world": env.world_size,
                                                           "format": outcome.checkpoint_format}))
        barrier(env)


if __name__ == "__main__":
    import torch.distributed as dist

    plan = json.loads(Path(sys.argv[1]).read_text())
    dist.init_process_group("gloo")
    try:
        for phase in plan["phases"]:
            run_phase(phase, Path(plan["tokenized"]))
    finally:
        dist.destroy_process_group()
