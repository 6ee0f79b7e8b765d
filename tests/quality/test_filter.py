"""The filter stage under datatrove's local executor (2 tasks), threshold and keep_fraction modes.

Upstream stages are built once per module (ingest/annotate written directly,
embed + classifier run for real with a tiny random causal LM); each test works
on its own copy of that run.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import quality_fixtures as qf

from phi1.config import load_config
from phi1.documents import read_documents
from phi1.errors import Phi1Error
from phi1.pipeline import Pipeline
from phi1.quality.cache import EmbeddingCache, cache_folder
from phi1.quality.classifier import QualityModel, train_quality_model
from phi1.quality.config import ClassifierConfig, EmbedConfig
from phi1.quality.embedders import CausalLMEmbedder
from phi1.quality.filter import QualityFilter, keep_cutoff, tiebreak

N_DOCS = 60


def _overrides(root, *extra: str) -> list[str]:
    return [f"run.root={root}", "run.name=t", "embed.backend=hf_causal_lm", f"embed.model={qf.tiny_causal_lm_dir()}",
            "embed.device=cpu", "embed.precision=fp32", "embed.batch_size=8", "embed.max_tokens=64", "classifier.n_estimators=30",
            "classifier.n_jobs=1", "filter.executor.tasks=2", "filter.executor.workers=1", "filter.batch_size=8",
            *extra]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("filter-base")
    cfg = load_config(None, _overrides(root))
    docs = qf.corpus(N_DOCS)
    qf.write_ingest(cfg, docs)
    qf.write_annotate(cfg, docs[:30], invalid=3)
    Pipeline(cfg, echo=lambda _: None).run(only=["embed", "classifier"])
    return root, docs


@pytest.fixture
def run_copy(base_run, tmp_path):
    root, docs = base_run
    shutil.copytree(root, tmp_path / "runs")
    return tmp_path / "runs", docs


def _run_filter(root, *extra: str):
    cfg = load_config(None, _overrides(root, *extra))
    Pipeline(cfg, echo=lambda _: None).run(only=["filter"])
    out = cfg.run_dir / "filter"
    kept = {d.id: d for d in read_documents(out / "docs")}
    dropped = {d.id: d for d in read_documents(out / "excluded")} if (out / "excluded").exists() else {}
    return cfg, json.loads((out / "manifest.json").read_text()), kept, dropped


def test_threshold_keeps_and_excludes_with_scores(run_copy):
    root, docs = run_copy
    cfg, manifest, kept, dropped = _run_filter(root, "filter.threshold=0.5")
    assert kept and dropped
    assert set(kept) | set(dropped) == {d["id"] for d in docs} and not set(kept) & set(dropped)
    assert all(d.metadata["quality_score"] >= 0.5 for d in kept.values())
    assert all(d.metadata["quality_score"] < 0.5 and d.metadata["filter_reason"] == "low_quality"
               for d in dropped.values())
    # Records keep their text and metadata; only quality_score is added.
    by_id = {d["id"]: d for d in docs}
    for d in kept.values():
        assert d.text == by_id[d.id]["text"]
        assert {k: v for k, v in d.metadata.items() if k != "quality_score"} == by_id[d.id]["metadata"]

    # The scores are the classifier's prediction on the embedder's vectors.
    model = QualityModel.load(cfg.run_dir / "classifier")
    emb = CausalLMEmbedder(qf.tiny_causal_lm_dir(), max_tokens=64)
    ids = sorted(kept) + sorted(dropped)
    texts = [by_id[i]["text"] for i in ids]
    want = model.score(emb.embed(texts), emb.name)
    got = [(kept.get(i) or dropped[i]).metadata["quality_score"] for i in ids]
    np.testing.assert_allclose(got, want, atol=1e-5)

    c = manifest["counts"]
    assert c["documents_in"] == N_DOCS and c["documents_kept"] == len(kept)
    assert c["bytes_in"] == sum(len(d["text"].encode()) for d in docs)
    assert c["bytes_kept"] == sum(len(d.text.encode()) for d in kept.values())
    assert c["tokens_in_est"] == round(c["bytes_in"] / cfg.ingest.bytes_per_token)
    assert manifest["metrics"]["keep_rate_documents"] == round(len(kept) / N_DOCS, 4)
    assert "kept" in manifest["summary"][0]
    # Which precision the embedding ran in, and why; how many vectors the tasks computed.
    embedded_upstream = json.loads((cfg.run_dir / "embed" / "manifest.json").read_text())["counts"]["embedded"]
    assert c["embedded"] == N_DOCS - embedded_upstream > 0
    assert manifest["precision"] == "fp32" and manifest["precision_reason"] == "set in the config (embed.precision)"
    assert f"{c['embedded']} documents embedded here, {embedded_upstream} vectors from the cache; fp32 on this " \
           "machine: set in the config (embed.precision)" in manifest["summary"]
    # Documents the embed stage had not seen (scope = labelled) were embedded by the
    # filter tasks and added to the cache: every document now has a cached vector.
    cache = EmbeddingCache(cache_folder(root / "t" / "cache" / "embeddings", emb))
    assert len(cache) == N_DOCS


@pytest.mark.parametrize("fraction_of", ["documents", "tokens"])
def test_keep_fraction_keeps_exactly_the_top_share(run_copy, fraction_of):
    root, docs = run_copy
    cfg, manifest, kept, dropped = _run_filter(root, "filter.mode=keep_fraction", "filter.keep_fraction=0.25",
                                               f"filter.fraction_of={fraction_of}")
    assert len(kept) + len(dropped) == N_DOCS
    size = {d["id"]: len(d["text"].encode()) for d in docs}
    score = {**{i: d.metadata["quality_score"] for i, d in kept.items()},
             **{i: d.metadata["quality_score"] for i, d in dropped.items()}}
    # Expected: the prefix of the ranking (score desc, fixed tie rank asc) reaching 25%.
    ranking = sorted(score, key=lambda i: (-score[i], tiebreak(i)))
    weight = (lambda i: size[i]) if fraction_of == "tokens" else (lambda i: 1)
    total, acc, expect = sum(weight(i) for i in ranking), 0, set()
    for i in ranking:
        expect.add(i)
        acc += weight(i)
        if acc >= 0.25 * total:
            break
    assert set(kept) == expect
    if fraction_of == "documents":
        assert len(kept) == math.ceil(0.25 * N_DOCS)
    assert manifest["counts"]["documents_kept"] == len(kept)
    assert manifest["metrics"]["mode"] == "keep_fraction"
    assert min(d.metadata["quality_score"] for d in kept.values()) >= max(
        d.metadata["quality_score"] for d in dropped.values())
    # Two datatrove passes: score everything, then keep the top share.
    assert (cfg.run_dir / "filter" / "logs" / "score" / "completions").is_dir()
    assert len(list((cfg.run_dir / "filter" / "scores").glob("*.npz"))) == 2


def test_keep_cutoff_splits_ties():
    scores = np.array([0.9, 0.5, 0.5, 0.5, 0.5, 0.1])
    ties = np.array([5, 4, 3, 2, 1, 0], dtype=np.uint64)
    cut = keep_cutoff(scores, np.ones(6, np.int64), ties, 0.5, "documents")
    assert cut.keeps(scores, ties).tolist() == [True, False, False, True, True, False]
    assert keep_cutoff(scores, np.ones(6, np.int64), ties, 1.0, "documents").keeps(scores, ties).all()


def test_filter_refuses_a_classifier_trained_on_another_embedder(run_copy):
    root, _ = run_copy
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 32)).astype(np.float32)
    other = train_quality_model(x, np.r_[np.full(20, 4.0), np.zeros(20)], {"name": "other-embedder", "dim": 32},
                                ClassifierConfig(n_estimators=5, n_jobs=1))
    other.save(root / "t" / "classifier")
    with pytest.raises(Phi1Error, match="trained on other-embedder embeddings"):
        _run_filter(root)


def test_filter_step_pickles_for_worker_processes(tmp_path):
    import dill  # what datatrove's multiprocess pool uses to ship steps to workers

    from datatrove.pipeline.writers import JsonlWriter

    step = QualityFilter(EmbedConfig(), str(tmp_path), None, str(tmp_path / "s"), threshold=0.5,
                         exclusion_writer=JsonlWriter(str(tmp_path / "x")), batch_size=4)
    clone = dill.loads(dill.dumps(step))
    assert clone.threshold == 0.5 and clone.embed_cfg == EmbedConfig() and clone.batch_size == 4
