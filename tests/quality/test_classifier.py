"""The quality classifier: learns known labellings, records its embedder, refuses others."""

from __future__ import annotations

import json

import numpy as np
import pytest

from phi1.errors import Phi1Error
from phi1.quality.classifier import QualityModel, train_quality_model
from phi1.quality.config import ClassifierConfig

EMB = {"name": "toy-embedder", "dim": 16, "key": "abc"}


def _clusters(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian clusters along a direction; scores 4-5 on one side, 0-2 on the other."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=16)
    w /= np.linalg.norm(w)
    side = rng.random(n) < 0.35  # imbalanced, like real labels
    x = rng.normal(size=(n, 16)) + np.where(side, 3.0, -3.0)[:, None] * w
    scores = np.where(side, rng.choice([4.0, 5.0], n), rng.choice([0.0, 1.0, 2.0], n))
    return x.astype(np.float32), scores


def _direction(n: int = 600, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A score that is a linear function of one direction of the embedding (plus noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    w = np.zeros(16)
    w[3] = 1.0
    scores = np.clip(2.5 + 1.5 * (x @ w) + rng.normal(scale=0.2, size=n), 0, 5)
    return x, scores


@pytest.mark.parametrize("kind", ["random_forest", "logistic_regression"])
def test_binary_classifier_learns_separable_clusters(kind):
    x, s = _clusters()
    model = train_quality_model(x, s, EMB, ClassifierConfig(kind=kind, threshold=3.0, n_estimators=50), seed=0)
    m = model.info["metrics"]
    assert m["f1"] > 0.9 and m["roc_auc"] > 0.95  # chance F1 at this balance is ~0.4
    tn_fp, fn_tp = m["confusion_matrix"]
    assert sum(tn_fp) + sum(fn_tp) == model.info["labels"]["validation"] == 80
    bal = model.info["class_balance"]
    assert bal["positive"] + bal["negative"] == 400
    # Stratified split: the validation set keeps the class balance.
    assert abs(bal["validation_positive"] / 80 - bal["positive_rate"]) < 0.03
    p = model.score(x[:10], "toy-embedder")
    assert ((p >= 0) & (p <= 1)).all()


def test_binary_classifier_learns_a_direction_and_is_seeded():
    x, s = _direction()
    cfg = ClassifierConfig(kind="random_forest", threshold=2.5, n_estimators=100)
    a = train_quality_model(x, s, EMB, cfg, seed=3)
    b = train_quality_model(x, s, EMB, cfg, seed=3)
    assert a.info["metrics"]["f1"] > 0.9
    assert a.info["metrics"] == b.info["metrics"]
    np.testing.assert_array_equal(a.score(x[:50]), b.score(x[:50]))


@pytest.mark.parametrize("kind", ["random_forest", "logistic_regression"])
def test_regression_predicts_scores(kind):
    x, s = _direction()
    model = train_quality_model(x, s, EMB, ClassifierConfig(kind=kind, task="regression", threshold=2.5,
                                                            n_estimators=50), seed=0)
    m = model.info["metrics"]
    assert m["spearman"] > 0.8 and m["pearson"] > 0.8 and m["f1"] > 0.85
    assert m["mae"] < 0.6
    assert model.score(x[:5]).shape == (5,)


def test_single_class_is_a_clear_error():
    x, _ = _clusters(50)
    with pytest.raises(Phi1Error, match=r"all 50 usable labels are below classifier.threshold = 3"):
        train_quality_model(x, np.full(50, 1.0), EMB, ClassifierConfig())
    with pytest.raises(Phi1Error, match="at least 2 of each class"):
        train_quality_model(x, np.r_[5.0, np.zeros(49)], EMB, ClassifierConfig())


def test_save_load_and_mismatched_embedder_is_refused(tmp_path):
    x, s = _clusters()
    model = train_quality_model(x, s, EMB, ClassifierConfig(n_estimators=20), seed=0)
    model.save(tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["embedder"]["name"] == "toy-embedder" and meta["embedder"]["dim"] == 16
    assert meta["threshold"] == 3.0 and meta["task"] == "binary" and "f1" in meta["metrics"]
    loaded = QualityModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.score(x[:20], "toy-embedder"), model.score(x[:20], "toy-embedder"))
    with pytest.raises(Phi1Error, match="trained on toy-embedder embeddings \\(dim 16\\).*other-model"):
        loaded.score(x[:3], "other-model")
    with pytest.raises(Phi1Error, match="dim 8"):
        loaded.score(np.zeros((3, 8), np.float32), "toy-embedder")
    with pytest.raises(Phi1Error, match="dim 8"):
        loaded.score(np.zeros((3, 8), np.float32))


def test_load_rejects_missing_or_foreign_files(tmp_path):
    with pytest.raises(Phi1Error, match="not found"):
        QualityModel.load(tmp_path)
    import joblib

    joblib.dump({"something": 1}, tmp_path / "model.pkl")
    with pytest.raises(Phi1Error, match="not a phi1 quality model"):
        QualityModel.load(tmp_path)
    (tmp_path / "model.pkl").write_text("garbage")
    with pytest.raises(Phi1Error, match="not a phi1 quality model"):
        QualityModel.load(tmp_path)


def test_validation_predictions_are_the_held_out_rows_behind_the_metrics():
    """`model.validation` (written to classifier/validation.json for the report's ROC/PR curves)
    is exactly the held-out set the metrics were computed on."""
    from sklearn.metrics import roc_auc_score

    x, s = _clusters(seed=4)
    model = train_quality_model(x, s, EMB, ClassifierConfig(threshold=3.0, n_estimators=30), seed=0)
    v = model.validation
    assert len(v["index"]) == len(set(v["index"])) == model.info["labels"]["validation"]
    np.testing.assert_allclose(v["predicted"], model.score(x[v["index"]], "toy-embedder"))
    assert v["teacher_score"] == s[v["index"]].tolist()
    assert v["positive"] == [int(t >= 3.0) for t in v["teacher_score"]]
    assert round(roc_auc_score(v["positive"], v["predicted"]), 4) == model.info["metrics"]["roc_auc"]
