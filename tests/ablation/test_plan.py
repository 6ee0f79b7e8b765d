"""The ablation's runs as configs: mixtures, seeds, the stage split, the
unfiltered arm's rate, and links the pipeline takes as current. No training."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from phi1.ablation.links import link_cache, link_stages, linked_stages
from phi1.ablation.plan import (arm_runs, arms, base_run, split_stages, unfiltered_rate)
from phi1.config import ConfigError, load_config
from phi1.errors import Phi1Error
from phi1.pipeline import RunDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.stages import mark_done  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _cfg(tmp_path, *extra):
    return load_config(REPO / "configs" / "ablation.toml", [f"run.root={tmp_path}", *extra])


def test_arms_resolve_to_the_intended_mixtures(tmp_path):
    cfg = _cfg(tmp_path)
    got = {a.name: a.mixture for a in arms(cfg, 0.2734)}
    assert got == {"unfiltered": {"ingest": 0.2734}, "filtered": {"filter": 1.0},
                   "filtered+synthetic": {"filter": 1.0, "synth.textbooks": 1.0}}
    split = split_stages(cfg)
    for arm in arms(cfg, 0.2734):
        own, seeded = arm_runs(cfg, split, arm)
        for plan in (own, *seeded):
            assert plan.config.tokenize.inputs == arm.mixture
            rd = RunDirectory(plan.config)
            refs = {e.ref: e.weight for e in rd.graph.plan("tokenize").edges["inputs"]}
            assert refs == arm.mixture  # what the pipeline will read, weights included


def test_arms_follow_the_papers_order_and_the_config(tmp_path):
    cfg = _cfg(tmp_path, "ablation.arms=['filtered', 'unfiltered']")
    assert [a.name for a in arms(cfg, 0.5)] == ["unfiltered", "filtered"]
    cfg = _cfg(tmp_path, "ablation.synthetic_rate=0.5")
    assert arms(cfg, 0.5)[2].mixture == {"filter": 1.0, "synth.textbooks": 0.5}


def test_stage_split_follows_the_data_flow(tmp_path):
    split = split_stages(_cfg(tmp_path))
    assert split.arm == ("tokenize",)
    assert split.seeded[:4] == ("pretrain", "finetune", "generate", "execute")
    assert {"ingest", "annotate", "embed", "classifier", "filter", "tokenizer", "mine", "synth"} == set(split.shared)
    # a stage no arm reads is not the ablation's work
    assert "decontam" not in split.shared + split.arm + split.seeded
    # without the synthetic arm, synth is not needed; with only the unfiltered arm the filter still is
    # (its keep rate sets the sample), unless the rate is given
    only_a = split_stages(_cfg(tmp_path, "ablation.arms=['unfiltered']"))
    assert "filter" in only_a.shared and "synth" not in only_a.shared
    given = split_stages(_cfg(tmp_path, "ablation.arms=['unfiltered']", "ablation.unfiltered_rate=0.3"))
    assert "filter" not in given.shared and "ingest" in given.shared


def test_seeds_differ_only_in_the_training_stages(tmp_path):
    cfg = _cfg(tmp_path)
    split = split_stages(cfg)
    plans = {}
    for arm in arms(cfg, 0.25):
        own, seeded = arm_runs(cfg, split, arm)
        plans[arm.name] = (own, seeded)
        assert [p.seed for p in seeded] == [0, 1, 2]
        assert [p.name for p in seeded] == [f"{arm.name}-s{s}" for s in (0, 1, 2)]
        assert [(p.config.pretrain.seed, p.config.finetune.seed) for p in seeded] == [(0, 0), (1, 1), (2, 2)]
        for p in seeded:
            assert p.config.run.seed == cfg.run.seed  # the data's seed never changes
            assert p.links == {**{s: "base" for s in split.shared}, **{s: arm.name for s in split.arm}}
            assert p.stages == split.seeded
        rd = [RunDirectory(p.config) for p in seeded]
        for stage in split.shared + split.arm:
            spec = rd[0].spec(stage)
            hashes = {p.config.section_hash(*spec.sections) for p in (own, *seeded)}
            assert len(hashes) == 1, stage  # one tokenize per arm, shared stages alike
        for stage in ("pretrain", "finetune"):
            spec = rd[0].spec(stage)
            assert len({p.config.section_hash(*spec.sections) for p in seeded}) == 3, stage
    base = base_run(cfg, split)
    for stage in split.shared:  # every arm and seed computes its shared stages' identity as base does
        spec = RunDirectory(base.config).spec(stage)
        want = base.config.section_hash(*spec.sections)
        for own, seeded in plans.values():
            assert {p.config.section_hash(*spec.sections) for p in (own, *seeded)} == {want}
    tok = RunDirectory(base.config).spec("tokenize")
    assert len({own.config.section_hash(*tok.sections) for own, _ in plans.values()}) == 3  # arms differ there
    assert plans["filtered"][1][0].path == tmp_path / "ablation" / "filtered-s0"
    assert not plans["filtered"][1][0].config.run.report and base.config.run.report


@pytest.mark.parametrize("value, message", [
    ("ablation.seeds=[]", "seeds is empty"),
    ("ablation.seeds=[0, 0, 1]", "repeats a seed"),
    ("ablation.seeds=[-1, 0]", "seeds must be >= 0"),
    ("ablation.arms=['unfilterd']", "did you mean 'unfiltered'"),
    ("ablation.arms=[]", "arms is empty"),
    ("ablation.unfiltered_rate=1.5", "ablation.unfiltered_rate = 1.5 is out of range"),
    ("pretrain.seed=-2", "pretrain.seed = -2 is out of range"),
])
def test_bad_ablation_settings_are_one_line_config_errors(tmp_path, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        _cfg(tmp_path, value)


def _finished_base(tmp_path, *extra, keep_rate=0.25, read="ingest"):
    cfg = _cfg(tmp_path, *extra)
    split = split_stages(cfg)
    base = base_run(cfg, split)
    for stage in split.shared:
        extra_manifest = {}
        if stage == "filter":
            extra_manifest = {"metrics": {"keep_rate_tokens": keep_rate},
                              "datasets": {"documents": [{"ref": read, "kind": "documents"}]}}
        mark_done(base.config, stage, **extra_manifest)
    return cfg, split, base


def test_unfiltered_rate_is_the_filters_token_keep_rate(tmp_path):
    cfg, _, base = _finished_base(tmp_path, keep_rate=0.3125)
    rate, where = unfiltered_rate(cfg, base.path)
    assert rate == 0.3125 and "keep_rate_tokens" in where
    cfg2 = _cfg(tmp_path, "ablation.unfiltered_rate=0.5")
    assert unfiltered_rate(cfg2, base.path) == (0.5, "ablation.unfiltered_rate")


def test_unfiltered_rate_refuses_a_filter_of_something_else(tmp_path):
    cfg, _, base = _finished_base(tmp_path, read="synth.textbooks")
    with pytest.raises(ConfigError, match="its keep rate is not a share of 'ingest'"):
        unfiltered_rate(cfg, base.path)


@pytest.mark.parametrize("rate", [None, 0.0, 1.5, "0.3", True])
def test_unfiltered_rate_refuses_a_missing_or_bad_rate(tmp_path, rate):
    cfg, _, base = _finished_base(tmp_path, keep_rate=rate)
    with pytest.raises(Phi1Error, match="no usable metrics.keep_rate_tokens"):
        unfiltered_rate(cfg, base.path)


def test_linked_stages_are_current_for_every_arm_and_seed(tmp_path):
    cfg, split, base = _finished_base(tmp_path)
    for arm in arms(cfg, 0.25):
        own, seeded = arm_runs(cfg, split, arm)
        link_stages(own.path, own.links)
        mark_done(own.config, "tokenize")  # the arm's tokenize, computed in its own folder
        for plan in seeded:
            made = link_stages(plan.path, plan.links)
            assert sorted(made) == sorted(plan.links)
            assert link_cache(plan.path, "base")
            rd = RunDirectory(plan.config)
            for st in rd.statuses():
                if st.name in plan.links:
                    assert st.state == "done", (plan.name, st.name, st.reason)
                    assert os.readlink(plan.path / st.name) == os.path.join("..", plan.links[st.name], st.name)
                elif st.name in plan.stages and st.state != "skipped":
                    assert st.state == "pending", (plan.name, st.name)
            assert linked_stages(plan.path)["cache"] == os.path.join("..", "base", "cache")
            # linking again changes nothing
            assert link_stages(plan.path, plan.links) == [] and not link_cache(plan.path, "base")
    # a re-run shared stage (new run_id) makes the arms' tokenize stale, through the links
    mark_done(base.config, "tokenizer")
    own, seeded = arm_runs(cfg, split, arms(cfg, 0.25)[1])
    st = RunDirectory(seeded[0].config).status(RunDirectory(seeded[0].config).spec("tokenize"))
    assert st.state == "stale" and "tokenizer" in st.reason


def test_links_never_replace_data(tmp_path):
    cfg, split, base = _finished_base(tmp_path)
    own, seeded = arm_runs(cfg, split, arms(cfg, 0.25)[0])
    plan = seeded[0]
    (plan.path / "ingest").mkdir(parents=True)
    (plan.path / "ingest" / "data.txt").write_text("somebody's")
    with pytest.raises(Phi1Error, match="is a folder of its own"):
        link_stages(plan.path, plan.links)
    assert (plan.path / "ingest" / "data.txt").read_text() == "somebody's"
    # an unfinished source is refused too
    with pytest.raises(Phi1Error, match="has not finished in run 'unfiltered'"):
        link_stages(seeded[1].path, {"tokenize": "unfiltered"})
    # a wrong link (ours) is replaced
    seeded[1].path.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.join("..", "elsewhere", "ingest"), seeded[1].path / "ingest")
    link_stages(seeded[1].path, {"ingest": "base"})
    assert os.readlink(seeded[1].path / "ingest") == os.path.join("..", "base", "ingest")


def test_a_bad_arm_mixture_names_the_ablation_keys_not_tokenize(tmp_path):
    cfg = _cfg(tmp_path, "ablation.unfiltered=nope")
    with pytest.raises(ConfigError, match=r"^ablation arm 'unfiltered' .*ablation.unfiltered.*unknown dataset 'nope'"):
        split_stages(cfg)
