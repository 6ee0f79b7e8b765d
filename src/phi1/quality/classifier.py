"""`classifier` stage: learn educational value from embeddings (paper: a random forest).

Reads ``annotate/labels.jsonl`` (invalid labels are left out) and the `embed`
stage's vectors; writes::

    classifier/model.pkl    the fitted scikit-learn estimator (joblib)
    classifier/model.json   {embedder: {name, dim, key}, kind, task, threshold, metrics, ...}
    classifier/validation.json  held-out labels: id, predicted score, teacher score, positive

``task = "binary"`` (default): a document is positive when its teacher score
is >= ``threshold``; the model predicts the probability of that, which is the
filter's ``quality_score``. ``task = "regression"`` predicts the score itself
(FineWeb-Edu's choice: a regression head, thresholded at 3 afterwards).

The split is stratified on the binary label and seeded from ``run.seed``;
validation metrics land in the manifest. A saved model refuses vectors from
another embedder (name or dimension), since a forest on MiniLM features
means nothing on CodeGen features.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from phi1.errors import InputError, Phi1Error
from phi1.files import atomic_path, write_json_atomic
from phi1.stage import StageContext, StageResult

MODEL_PKL = "model.pkl"
MODEL_JSON = "model.json"
VALIDATION_JSON = "validation.json"  # held-out ids, predicted scores and teacher labels


# --------------------------------------------------------------------------- model


@dataclass
class QualityModel:
    """A fitted estimator plus the embedder it was trained on."""

    estimator: Any
    embedder: dict[str, Any]  # {"name", "dim", "key", ...}
    task: str = "binary"
    threshold: float = 3.0
    kind: str = "random_forest"
    info: dict[str, Any] = field(default_factory=dict)  # metrics and training facts, for model.json
    # held-out rows of the last fit: {"index", "predicted", "teacher_score", "positive"} (not saved with the model)
    validation: dict[str, Any] = field(default_factory=dict, repr=False)

    def check_embedder(self, name: str | None, dim: int) -> None:
        """Refuse vectors from an embedder other than the training one."""
        want_name, want_dim = self.embedder.get("name"), int(self.embedder.get("dim", -1))
        if (name is not None and name != want_name) or dim != want_dim:
            raise Phi1Error(
                f"the quality classifier was trained on {want_name} embeddings (dim {want_dim}), "
                f"but got {name or 'unnamed'} embeddings (dim {dim}): re-run `classifier` with the same "
                f"[embed] settings"
            )

    def score(self, vectors: np.ndarray, embedder: str | None = None) -> np.ndarray:
        """Quality score per row: P(score >= threshold) for binary, the predicted score for regression."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise Phi1Error(f"expected a 2-d array of embeddings, got shape {vectors.shape}")
        self.check_embedder(embedder, vectors.shape[1])
        if len(vectors) == 0:
            return np.zeros(0, dtype=np.float64)
        if self.task == "binary":
            classes = list(self.estimator.classes_)
            return self.estimator.predict_proba(vectors)[:, classes.index(1)]
        return np.asarray(self.estimator.predict(vectors), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {"embedder": self.embedder, "task": self.task, "threshold": self.threshold,
                "kind": self.kind, **self.info}

    # -- persistence -----------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        import joblib

        folder = Path(folder)
        with atomic_path(folder / MODEL_PKL) as tmp:
            joblib.dump({"estimator": self.estimator, **self.describe()}, tmp)
        write_json_atomic(folder / MODEL_JSON, self.describe())

    @classmethod
    def load(cls, folder: str | Path) -> "QualityModel":
        import joblib

        path = Path(folder) / MODEL_PKL
        if not path.exists():
            raise InputError(f"{path} not found: run the classifier stage first")
        try:
            blob = joblib.load(path)
        except Exception as e:  # pickles fail in many ways; all mean the same to the user
            raise InputError(f"{path} is not a phi1 quality model ({type(e).__name__}: {e})") from None
        if not isinstance(blob, dict) or "estimator" not in blob or "embedder" not in blob:
            raise InputError(f"{path} is not a phi1 quality model (no estimator/embedder record)")
        info = {k: v for k, v in blob.items() if k not in {"estimator", "embedder", "task", "threshold", "kind"}}
        return cls(blob["estimator"], blob["embedder"], blob.get("task", "binary"),
                   float(blob.get("threshold", 3.0)), blob.get("kind", "random_forest"), info)


# --------------------------------------------------------------------------- training


def make_estimator(cfg: Any, seed: int) -> Any:
    """The configured scikit-learn estimator (unfitted)."""
    weight = None if cfg.class_weight == "none" else "balanced"
    if cfg.kind == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        common = dict(n_estimators=cfg.n_estimators, max_depth=cfg.max_depth or None,
                      min_samples_leaf=cfg.min_samples_leaf, n_jobs=cfg.n_jobs, random_state=seed)
        if cfg.task == "binary":
            return RandomForestClassifier(class_weight=weight, **common)
        return RandomForestRegressor(**common)
    if cfg.kind == "logistic_regression":
        if cfg.task == "binary":
            from sklearn.linear_model import LogisticRegression

            return LogisticRegression(C=cfg.C, class_weight=weight, max_iter=2000, random_state=seed)
        from sklearn.linear_model import Ridge  # the linear model for a regression target

        return Ridge(alpha=cfg.alpha)
    raise Phi1Error(f"classifier.kind {cfg.kind!r} is not one of random_forest, logistic_regression")


def train_quality_model(vectors: np.ndarray, scores: np.ndarray, embedder: dict[str, Any], cfg: Any,
                        seed: int = 0) -> QualityModel:
    """Fit on a seeded stratified split; validation metrics go into the model's info."""
    from sklearn.model_selection import train_test_split

    vectors = np.asarray(vectors, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float64)
    if len(vectors) != len(scores):
        raise Phi1Error(f"{len(vectors)} vectors for {len(scores)} scores")
    positive = (scores >= cfg.threshold).astype(np.int64)
    n_pos, n_neg = int(positive.sum()), int(len(positive) - positive.sum())
    where = f"scores {scores.min():g}..{scores.max():g}" if len(scores) else "no labels"
    if cfg.task == "binary" and min(n_pos, n_neg) == 0:
        side = "at or above" if n_neg == 0 else "below"
        raise Phi1Error(
            f"all {len(scores)} usable labels are {side} classifier.threshold = {cfg.threshold:g} ({where}): "
            f"one class cannot train a classifier; change classifier.threshold or label more documents"
        )
    stratify = positive if min(n_pos, n_neg) >= 2 else None
    if cfg.task == "binary" and stratify is None:
        raise Phi1Error(
            f"only {min(n_pos, n_neg)} {'positive' if n_pos < n_neg else 'negative'} label(s) at "
            f"classifier.threshold = {cfg.threshold:g} ({where}): need at least 2 of each class for a "
            f"train/validation split"
        )
    n_val = int(np.ceil(len(scores) * cfg.validation_fraction))
    if n_val < 2 or len(scores) - n_val < 2:
        raise Phi1Error(f"{len(scores)} usable labels are too few for a train/validation split "
                        f"(classifier.validation_fraction = {cfg.validation_fraction})")
    idx = np.arange(len(scores))
    try:
        tr, va = train_test_split(idx, test_size=cfg.validation_fraction, random_state=seed, stratify=stratify)
    except ValueError as e:  # e.g. the validation set is smaller than the number of classes
        raise Phi1Error(f"cannot split {len(scores)} labels for validation: {e}") from None

    est = make_estimator(cfg, seed)
    target = positive if cfg.task == "binary" else scores
    est.fit(vectors[tr], target[tr])
    model = QualityModel(est, dict(embedder), cfg.task, float(cfg.threshold), cfg.kind)
    val_scores = model.score(vectors[va], embedder.get("name"))
    metrics = evaluate(val_scores, scores[va], positive[va], cfg.task, cfg.threshold)
    model.validation = {"index": va.tolist(), "predicted": [float(x) for x in val_scores],
                        "teacher_score": scores[va].tolist(), "positive": positive[va].tolist()}
    model.info = {
        "metrics": metrics,
        "labels": {"used": len(scores), "train": len(tr), "validation": len(va)},
        "class_balance": {
            "positive": n_pos, "negative": n_neg, "positive_rate": round(n_pos / len(scores), 4),
            "train_positive": int(positive[tr].sum()), "validation_positive": int(positive[va].sum()),
        },
        "seed": seed,
        "score": "P(teacher score >= threshold)" if cfg.task == "binary" else "predicted teacher score",
    }
    return model


def evaluate(pred: np.ndarray, scores: np.ndarray, positive: np.ndarray, task: str, threshold: float) -> dict[str, Any]:
    """Validation metrics: classification metrics at the threshold (both tasks), plus regression errors."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

    cut = 0.5 if task == "binary" else threshold
    guess = (pred >= cut).astype(np.int64)
    out: dict[str, Any] = {
        "precision": float(precision_score(positive, guess, zero_division=0)),
        "recall": float(recall_score(positive, guess, zero_division=0)),
        "f1": float(f1_score(positive, guess, zero_division=0)),
        "accuracy": float(accuracy_score(positive, guess)),
        "confusion_matrix": confusion_matrix(positive, guess, labels=[0, 1]).tolist(),  # [[tn, fp], [fn, tp]]
        "roc_auc": float(roc_auc_score(positive, pred)) if len(set(positive.tolist())) == 2 else None,
        "validation_positive_rate": float(positive.mean()) if len(positive) else 0.0,
    }
    if task == "regression":
        from scipy.stats import pearsonr, spearmanr

        out["mae"] = float(np.mean(np.abs(pred - scores)))
        out["rmse"] = float(np.sqrt(np.mean((pred - scores) ** 2)))
        constant = np.ptp(pred) == 0 or np.ptp(scores) == 0
        out["spearman"] = None if constant else float(spearmanr(pred, scores).statistic)
        out["pearson"] = None if constant else float(pearsonr(pred, scores).statistic)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


# --------------------------------------------------------------------------- stage


def run(ctx: StageContext) -> StageResult:
    from phi1.quality.embed import EmbeddingTable, usable_labels

    cfg = ctx.section
    labels_path = ctx.input("labels").path
    table = EmbeddingTable(ctx.input("vectors").path)
    total = sum(1 for _ in _records(labels_path))
    ids, scores, missing, usable = [], [], 0, 0
    seen: set[str] = set()
    for rec in usable_labels(labels_path):
        usable += 1
        doc_id = str(rec["id"])
        if doc_id in seen:
            continue
        seen.add(doc_id)
        if doc_id not in table.row:
            missing += 1
            continue
        ids.append(doc_id)
        scores.append(float(rec["score"]))
    if missing:
        ctx.log(f"warning: {missing} labelled documents have no vector in {table.folder} (left out)")
    if not ids:
        raise InputError(f"no usable labels in {labels_path} have vectors in {table.folder}")
    vectors = table.get(ids)
    model = train_quality_model(vectors, np.array(scores), table.embedder, cfg, seed=ctx.config.run.seed)
    model.info["labels"].update({"total": total, "invalid": total - usable, "without_vector": missing})
    model.save(ctx.work_dir)
    # the held-out predictions themselves, so the run report can draw ROC / precision-recall curves
    val = model.validation
    write_json_atomic(ctx.work_dir / VALIDATION_JSON, {
        "score": model.info["score"], "threshold": cfg.threshold, "task": cfg.task,
        "id": [ids[i] for i in val["index"]], "predicted": val["predicted"],
        "teacher_score": val["teacher_score"], "positive": val["positive"]})

    m = model.info["metrics"]
    bal = model.info["class_balance"]
    lab = model.info["labels"]
    auc = f"{m['roc_auc']:.3f}" if m.get("roc_auc") is not None else "n/a"
    summary = [
        f"validation F1 {m['f1']:.3f} (precision {m['precision']:.3f}, recall {m['recall']:.3f}, "
        f"ROC-AUC {auc}) on {lab['validation']} held-out labels",
        f"{cfg.kind} {cfg.task} at score >= {cfg.threshold:g}: {lab['used']} labels used "
        f"({bal['positive_rate']:.0%} positive), {lab['invalid']} invalid, {missing} without a vector",
    ]
    if cfg.task == "regression":
        summary.insert(1, f"validation MAE {m['mae']:.3f}, Spearman "
                          f"{m['spearman'] if m['spearman'] is None else round(m['spearman'], 3)}")
    return StageResult(
        counts={"labels": total, "used": lab["used"], "train": lab["train"], "validation": lab["validation"],
                "invalid": lab["invalid"], "without_vector": missing, "positive": bal["positive"],
                "negative": bal["negative"]},
        metrics={**m, "class_balance": bal},
        summary=summary,
        extra={"model": {"kind": cfg.kind, "task": cfg.task, "threshold": cfg.threshold,
                         "embedder": {k: table.embedder.get(k) for k in ("name", "dim", "key")}}},
    )


def _records(path: Path):
    from phi1.documents import read_jsonl

    yield from read_jsonl(path)
