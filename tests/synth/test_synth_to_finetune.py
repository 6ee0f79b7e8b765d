"""The data flow end to end: `synth` (answered by the test server) produces
`synth.exercises`, and `finetune` trains on it mixed with `mine`."""

from __future__ import annotations

import json

import torch
from helpers.openai_server import OpenAIServer
from helpers.stages import mark_done
from synth_fixtures import Script
from train.training_fixtures import make_run

from phi1.cli import main
from phi1.config import load_config


def test_finetune_trains_on_synth_exercises_and_mine(tmp_path, capsys):
    path = make_run(tmp_path, "flow", with_mine=True,
                    finetune='inputs = { "synth.exercises" = 1.0, mine = 1.0 }')
    kinds = [f"valid:{i}" for i in range(5)] + ["syntax_error"]
    with OpenAIServer(lambda r: script.respond(r)) as srv:
        path.write_text(path.read_text() + f"""
[synth]
exercises = {len(kinds)}
diversity_sample = 0
dedup_against = "mine"

[synth.llm]
base_urls = ["{srv.base_url}"]
model = "teacher"
api_key_env = ""
""")
        config = load_config(path)
        script = Script(config, {"exercises": kinds})
        # a "pretrained" model: the nano preset, random weights, the run's tokenizer
        from transformers import AutoTokenizer, PhiForCausalLM

        from phi1.model.presets import phi_config, resolve_shape

        tok = AutoTokenizer.from_pretrained(config.run_dir / "tokenizer" / "tokenizer")
        torch.manual_seed(0)
        model_dir = config.run_dir / "pretrain" / "model"
        PhiForCausalLM(phi_config(resolve_shape(config.model, 64), len(tok), eos_token_id=tok.eos_token_id)
                       ).save_pretrained(model_dir)
        mark_done(config, "pretrain", metrics={}, counts={})
        torch.set_num_threads(1)
        assert main(["run", str(path), "--only", "synth", "finetune"]) == 0
    synth = json.loads((config.run_dir / "synth" / "manifest.json").read_text())
    assert synth["counts"]["exercises_kept"] == 5 and synth["counts"]["exercises_dropped_syntax_error"] == 1
    fin = json.loads((config.run_dir / "finetune" / "manifest.json").read_text())
    # finetune trains on mine's 48 training exercises plus synth's (its validation set is capped at eval_samples)
    assert fin["counts"]["train_exercises"] == 48 + synth["counts"]["exercises_train"] > 48
    assert synth["run_id"] in json.dumps(fin["inputs"])  # finetune's identity includes the synthetic data
    assert (config.run_dir / "finetune" / "model" / "model.safetensors").is_file()
    assert "encode train (synth.exercises x1 + mine x1)" in capsys.readouterr().err
