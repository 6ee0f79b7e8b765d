"""embed -> classifier -> filter through the `phi1` CLI with the offline MiniLM embedder."""

from __future__ import annotations

import json

import quality_fixtures as qf

from phi1.cli import main
from phi1.config import load_config
from phi1.documents import read_documents

N_DOCS = 40


def _config(tmp_path) -> str:
    path = tmp_path / "quality.toml"
    path.write_text(f"""
[run]
root = "{tmp_path / 'runs'}"
name = "cli"

[embed]
backend = "sentence_transformers"
model = ""
scope = "all"
device = "cpu"
batch_size = 16
max_tokens = 128

[classifier]
kind = "random_forest"
threshold = 3.0
n_estimators = 50
n_jobs = 1

[filter]
mode = "threshold"
batch_size = 16

[filter.executor]
kind = "local"
tasks = 2
workers = 1
""")
    return str(path)


def _manifest(cfg, stage):
    return json.loads((cfg.run_dir / stage / "manifest.json").read_text())


def test_embed_classifier_filter_through_the_cli(tmp_path, capsys):
    toml = _config(tmp_path)
    cfg = load_config(toml)
    docs = qf.corpus(N_DOCS, seed=3)
    qf.write_ingest(cfg, docs)
    qf.write_annotate(cfg, docs, invalid=4)

    assert main(["run", toml, "--only", "embed", "classifier", "filter"]) == 0
    out = capsys.readouterr().out
    assert "validation F1" in out and "kept" in out
    # precision = "auto" (the default): what this CPU reports decides, and both stages say so.
    from phi1.devices import resolve_precision

    precision, why = resolve_precision("auto", "cpu")
    assert f"{precision} on cpu: {why}" in out and f"{precision} on this machine: {why}" in out

    emb = _manifest(cfg, "embed")
    assert emb["counts"]["documents"] == N_DOCS and emb["counts"]["embedded"] == N_DOCS
    assert emb["precision"] == precision and emb["precision_reason"] == why
    info = json.loads((cfg.run_dir / "embed" / "embedder.json").read_text())
    assert info["name"] == "sentence-transformers/all-MiniLM-L6-v2" and info["dim"] == 384
    assert info["normalize"] is True and info["max_tokens"] == 128 and info["backend"] == "sentence_transformers"
    assert len(json.loads((cfg.run_dir / "embed" / "ids.json").read_text())) == N_DOCS

    clf = _manifest(cfg, "classifier")
    assert clf["counts"]["invalid"] == 4 and clf["counts"]["used"] == N_DOCS - 4
    assert clf["metrics"]["f1"] > 0.8  # tutorial functions vs data tables: easy for MiniLM
    assert set(clf["metrics"]["confusion_matrix"][0]) and "class_balance" in clf["metrics"]
    model_json = json.loads((cfg.run_dir / "classifier" / "model.json").read_text())
    assert model_json["embedder"]["name"] == info["name"] and model_json["embedder"]["dim"] == 384

    flt = _manifest(cfg, "filter")
    kept = list(read_documents(cfg.run_dir / "filter" / "docs"))
    dropped = list(read_documents(cfg.run_dir / "filter" / "excluded"))
    assert flt["counts"]["documents_in"] == N_DOCS == len(kept) + len(dropped)
    assert flt["counts"]["embedded"] == 0 and flt["precision"] == precision  # scope = all: only cache reads
    assert flt["counts"]["documents_kept"] == len(kept) > 0
    good = {d["id"] for d in docs if d["metadata"]["teacher_hint"] >= 3}
    assert sum(d.id in good for d in kept) >= 0.8 * len(kept)

    # Re-running embed (forced) re-embeds nothing: every vector comes from the cache.
    assert main(["embed", "--config", toml, "--force"]) == 0
    again = _manifest(cfg, "embed")
    assert again["counts"]["embedded"] == 0 and again["counts"]["cache_hits"] == N_DOCS
    assert again["run_id"] != emb["run_id"]

    # A threshold that leaves one class is one clear error line, not a traceback.
    capsys.readouterr()
    assert main(["classifier", "--config", toml, "--force", "--set", "classifier.threshold=10"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "one class cannot train a classifier" in err
    assert err.count("\n") == 1
