"""The report's plots (matplotlib), each returned as an ``<img>`` with an SVG data URI.

matplotlib's object API only (no pyplot): no global figure state, no GUI
backend, safe in a worker process. The SVG is made reproducible (fixed id
salt, no date), so the same run gives the same report bytes.
"""

from __future__ import annotations

import base64
import functools
import io
from typing import Any, Callable, Sequence

from phi1.report.html import esc

BLUE, GREEN, RED, ORANGE, GREY, PURPLE = "#2f6db5", "#2e9e5b", "#d1495b", "#e69b00", "#8a94a6", "#7a4fb5"
_RC = {"svg.hashsalt": "phi1-report", "svg.fonttype": "path", "font.size": 9, "axes.titlesize": 10,
       "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3}


def chart(fn: Callable[..., str]) -> Callable[..., str]:
    """Run a chart function with the report's matplotlib settings (read as artists are made)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> str:
        from matplotlib import rc_context

        with rc_context(_RC):
            return fn(*args, **kwargs)

    return wrapper


def figure(ncols: int = 1, width: float = 10.0, height: float = 3.2,
           ratios: Sequence[float] | None = None) -> tuple[Any, list[Any]]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    grid = fig.add_gridspec(1, ncols, width_ratios=ratios)
    return fig, [fig.add_subplot(grid[0, i]) for i in range(ncols)]


def to_img(fig: Any, alt: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img class="chart" alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">'


@chart
def funnel(start_label: str, start: float, drops: Sequence[tuple[str, float]], kept: float,
           title: str) -> str:
    """Horizontal bars: what came in, what each reason dropped, what was kept."""
    labels = [start_label] + [f"− {r}" for r, _ in drops] + ["kept"]
    values = [start] + [v for _, v in drops] + [kept]
    colors = [BLUE] + [RED] * len(drops) + [GREEN]
    fig, (ax,) = figure(height=0.9 + 0.28 * len(labels))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, values, color=colors)
    ax.set_yticks(y, labels)
    top = max(values) if values else 1
    for yi, v in zip(y, values):
        ax.text(v + top * 0.01, yi, f"{v:,.0f}", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.12 if top else 1)
    ax.set_title(title)
    return to_img(fig, title)


@chart
def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str = "",
         colors: Sequence[str] | None = None, reference: tuple[float, str] | None = None,
         percent: bool = False) -> str:
    """Vertical bars with their values written on top; an optional dashed reference line."""
    fig, (ax,) = figure(width=min(10.0, 2.0 + 0.7 * len(labels)), height=3.0)
    x = list(range(len(labels)))
    ax.bar(x, values, color=list(colors) if colors else BLUE)
    ax.set_xticks(x, labels, rotation=30 if max((len(s) for s in labels), default=0) > 10 else 0,
                  ha="right" if max((len(s) for s in labels), default=0) > 10 else "center")
    for xi, v in zip(x, values):
        ax.text(xi, v, f"{v:.1f}%" if percent else f"{v:,.4g}", ha="center", va="bottom", fontsize=8)
    top = max([*values, reference[0] if reference else 0, 0]) or 1.0
    ax.set_ylim(0, top * 1.18)
    if reference is not None:
        ax.axhline(reference[0], color=ORANGE, linestyle="--", linewidth=1.2, label=reference[1])
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    return to_img(fig, title)


@chart
def score_histogram(scores: Sequence[float], threshold: float | None, title: str,
                    balance: Sequence[tuple[str, float, str]]) -> str:
    """Left: the teacher's score histogram with the classifier's threshold; right: label balance."""
    import numpy as np

    fig, (ax, bx) = figure(ncols=2, height=3.0)
    arr = np.asarray(scores, dtype=float)
    if len(arr) and np.all(arr == np.round(arr)):
        lo, hi = int(arr.min()), int(arr.max())
        xs = np.arange(min(lo, 0), max(hi, 5) + 1)
        ax.bar(xs, [(arr == v).sum() for v in xs], color=BLUE, width=0.8)
        ax.set_xticks(xs)
    elif len(arr):
        ax.hist(arr, bins=24, range=(min(0.0, arr.min()), max(5.0, arr.max())), color=BLUE)
    if threshold is not None:
        ax.axvline(threshold - (0.5 if len(arr) and np.all(arr == np.round(arr)) else 0), color=RED,
                   linestyle="--", label=f"positive at score >= {threshold:g}")
        ax.legend(fontsize=8)
    ax.set_xlabel("teacher score (educational value)")
    ax.set_ylabel("labels")
    ax.set_title(title)
    names = [b[0] for b in balance]
    vals = [b[1] for b in balance]
    bx.bar(names, vals, color=[b[2] for b in balance])
    total = sum(vals) or 1
    bx.set_ylim(0, (max(vals) or 1) * 1.15)
    for i, v in enumerate(vals):
        bx.text(i, v, f"{v:,.0f} ({100 * v / total:.0f}%)", ha="center", va="bottom", fontsize=8)
    bx.set_title("label balance")
    return to_img(fig, f"{title}; label balance")


@chart
def classifier_curves(y_true: Sequence[int], y_score: Sequence[float], matrix: Sequence[Sequence[int]] | None,
                      cut: float) -> str:
    """ROC, precision-recall and the confusion matrix of the held-out labels."""
    import numpy as np
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    fig, (ra, pa, ca) = figure(ncols=3, height=3.2)
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(y_score, dtype=float)
    both = len(set(y.tolist())) == 2
    if both:
        fpr, tpr, _ = roc_curve(y, s)
        ra.plot(fpr, tpr, color=BLUE, label=f"AUC {auc(fpr, tpr):.3f}")
        ra.plot([0, 1], [0, 1], color=GREY, linestyle=":", label="chance")
        prec, rec, _ = precision_recall_curve(y, s)
        pa.plot(rec, prec, color=GREEN, label="classifier")
        pa.axhline(y.mean(), color=GREY, linestyle=":", label=f"base rate {y.mean():.2f}")
        ra.legend(fontsize=8, loc="lower right")
        pa.legend(fontsize=8, loc="lower left")
    else:
        for a in (ra, pa):
            a.text(0.5, 0.5, "one class only in the held-out set", ha="center", va="center")
    ra.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (held-out labels)",
           xlim=(0, 1), ylim=(0, 1.02))
    pa.set(xlabel="recall", ylabel="precision", title="precision-recall", xlim=(0, 1), ylim=(0, 1.02))
    if matrix is None:
        ca.axis("off")
        ca.text(0.5, 0.5, "no confusion matrix", ha="center", va="center")
    else:
        m = np.asarray(matrix, dtype=float)
        ca.imshow(m, cmap="Blues")
        lo, span = m.min(), (m.max() - m.min()) or 1.0
        for (i, j), v in np.ndenumerate(m):  # white text on the dark half of the colour scale
            ca.text(j, i, f"{v:,.0f}", ha="center", va="center",
                    color="white" if (v - lo) / span > 0.5 else "black", fontsize=11)
        ca.set_xticks([0, 1], ["predicted low", "predicted high"])
        ca.set_yticks([0, 1], ["teacher low", "teacher high"])
        ca.set_title(f"confusion matrix (cut {cut:g})")
        ca.grid(False)
    return to_img(fig, "classifier ROC curve, precision-recall curve and confusion matrix")


@chart
def filter_scores(scores: Sequence[float], sizes: Sequence[float], cut: float | None, title: str) -> str:
    """Left: score histogram, kept part green, the cut dashed; right: kept share vs cut-off."""
    import numpy as np

    fig, (ax, bx) = figure(ncols=2, height=3.2)
    s = np.asarray(scores, dtype=float)
    w = np.asarray(sizes, dtype=float) if len(sizes) == len(scores) else np.ones(len(s))
    lo, hi = (0.0, 1.0) if len(s) == 0 or (s.min() >= 0 and s.max() <= 1) else (float(s.min()), float(s.max()))
    edges = np.linspace(lo, hi, 41)
    if cut is not None:
        ax.hist(s[s < cut], bins=edges, color=RED, alpha=0.8, label="dropped")
        ax.hist(s[s >= cut], bins=edges, color=GREEN, alpha=0.8, label="kept")
        ax.axvline(cut, color="black", linestyle="--", linewidth=1, label=f"cut {cut:.3g}")
        ax.legend(fontsize=8)
    else:
        ax.hist(s, bins=edges, color=BLUE)
    ax.set(xlabel="quality score", ylabel="documents", title=title)
    grid = np.linspace(lo, hi, 201)
    n, total_w = max(len(s), 1), max(float(w.sum()), 1.0)
    bx.plot(grid, [(s >= g).sum() / n for g in grid], color=BLUE, label="documents kept")
    bx.plot(grid, [float(w[s >= g].sum()) / total_w for g in grid], color=PURPLE, label="size kept (tokens)")
    if cut is not None:
        bx.axvline(cut, color="black", linestyle="--", linewidth=1)
        kd, kt = (s >= cut).sum() / n, float(w[s >= cut].sum()) / total_w
        bx.plot([cut, cut], [kd, kt], "o", color="black")
        bx.annotate(f"{100 * kd:.1f}% docs, {100 * kt:.1f}% size", (cut, kd), textcoords="offset points",
                    xytext=(6, 6), fontsize=8)
    bx.set(xlabel="cut-off (keep score >= cut)", ylabel="fraction kept", ylim=(0, 1.05),
           title="kept fraction by cut-off")
    bx.legend(fontsize=8)
    return to_img(fig, f"{title}; kept fraction by cut-off")


@chart
def training_curves(train: dict[str, list[float]], evals: dict[str, list[float]], title: str) -> str:
    """Losses by step, the learning-rate schedule, and throughput (tokens/s, MFU)."""
    fig, (la, ra, ta) = figure(ncols=3, height=3.2)
    if train.get("step"):
        la.plot(train["step"], train["loss"], color=BLUE, label="train loss", linewidth=1.2)
    if evals.get("step"):
        if any(v is not None for v in evals.get("val_loss", [])):
            la.plot(evals["step"], evals["val_loss"], "o-", color=ORANGE, label="validation loss", markersize=4)
        if any(v is not None for v in evals.get("humaneval_solution_loss", [])):
            la.plot(evals["step"], evals["humaneval_solution_loss"], "s--", color=PURPLE,
                    label="HumanEval-solution loss", markersize=4)
    la.set(xlabel="step", ylabel="loss (nats/token)", title=title)
    la.legend(fontsize=7, framealpha=0.8)
    if train.get("lr"):
        ra.plot(train["step"], train["lr"], color=GREEN)
    else:
        ra.text(0.5, 0.5, "no learning rate logged", ha="center", va="center", transform=ra.transAxes)
    ra.set(xlabel="step", ylabel="learning rate", title="learning-rate schedule")
    ra.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if train.get("tokens_per_s"):
        steps, tps, mfu = train["step"], train["tokens_per_s"], train.get("mfu") or []
        ta.plot(steps, tps, color=BLUE, label="tokens/s")
        ta.set_ylabel("tokens/s")
        ratios = [m / t for m, t in zip(mfu, tps) if m is not None and t]
        if ratios and max(ratios) - min(ratios) <= 0.01 * max(ratios):
            # MFU is tokens/s times a constant (FLOPs per token / peak): one line, two scales
            r = sum(ratios) / len(ratios)
            ta.secondary_yaxis("right", functions=(lambda t: 100 * r * t, lambda u: u / (100 * r))).set_ylabel("MFU (%)")
        elif ratios:
            tb = ta.twinx()
            tb.plot(steps, [None if m is None else 100 * m for m in mfu], color=RED, linestyle="--", label="MFU %")
            tb.set_ylabel("MFU (%)", color=RED)
            tb.grid(False)
    else:
        ta.text(0.5, 0.5, "no throughput logged", ha="center", va="center", transform=ta.transAxes)
    ta.set(xlabel="step", title="throughput")
    return to_img(fig, f"{title}: loss curves, learning-rate schedule, throughput")


@chart
def histogram_counts(counts: dict[str, int], title: str, xlabel: str, color: str = BLUE) -> str:
    labels = list(counts)
    fig, (ax,) = figure(width=min(10.0, 2.5 + 0.45 * len(labels)), height=2.8)
    ax.bar(range(len(labels)), [counts[k] for k in labels], color=color)
    ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    return to_img(fig, title)


@chart
def synth_kind(kind: str, asked: float, kept: float, dropped: dict[str, float],
               coverage: dict[str, tuple[int, int]], similarity: dict[str, int] | None) -> str:
    """One kind of synthetic data: what was asked / kept / dropped why; how much of the seed space
    the kept records cover; how close each record is to its nearest neighbour."""
    import numpy as np

    fig, axes = figure(ncols=3 if similarity else 2, width=11.5, ratios=[1.15, 1.15, 0.8] if similarity else None,
                       height=1.0 + 0.24 * max(len(dropped) + 2, len(coverage), 7))
    da, ca = axes[0], axes[1]
    labels = ["asked"] + [f"− {r}" for r in dropped] + ["kept"]
    values = [asked] + list(dropped.values()) + [kept]
    y = np.arange(len(labels))[::-1]
    da.barh(y, values, color=[BLUE] + [RED] * len(dropped) + [GREEN])
    da.set_yticks(y, labels)
    for yi, v in zip(y, values):
        da.text(v, yi, f" {v:,.0f}", va="center", fontsize=8)
    da.set_xlim(0, (max(values) or 1) * 1.15)
    da.set_title(f"{kind}: asked, dropped, kept")
    names = list(coverage)
    shares = [100 * c / t if t else 0.0 for c, t in coverage.values()]
    yc = np.arange(len(names))[::-1]
    ca.barh(yc, [max(s, 1e-4) for s in shares], color=PURPLE)
    ca.set_xscale("log")
    ca.set_xlim(1e-4, 300)
    ca.set_yticks(yc, names)
    for yi, (c, t) in zip(yc, coverage.values()):
        ca.text(max(100 * c / t if t else 0, 1e-4), yi, f" {c:,}/{t:,}", va="center", fontsize=8)
    ca.set(xlabel="% of the seed space covered (log scale)", title=f"{kind}: seed coverage")
    if similarity:
        sa = axes[2]
        bins = list(similarity)
        sa.bar(range(len(bins)), list(similarity.values()), color=BLUE)
        sa.set_xticks(range(len(bins)), bins, rotation=45, ha="right")
        sa.set(xlabel="cosine similarity", ylabel="records", title="to the nearest other record")
    return to_img(fig, f"synthetic {kind}: drop reasons, seed-space coverage, nearest-neighbour similarity")


@chart
def per_tau(taus: Sequence[str], series: dict[str, Sequence[float]], title: str) -> str:
    """Grouped bars per AST match-rate threshold tau (one group per tau, one bar per series)."""
    fig, (ax,) = figure(width=min(10.0, 3.0 + 1.2 * len(taus)), height=3.0)
    n = max(len(series), 1)
    width = 0.8 / n
    colors = [RED, BLUE, PURPLE, GREEN, ORANGE]
    for i, (name, vals) in enumerate(series.items()):
        xs = [j + (i - (n - 1) / 2) * width for j in range(len(taus))]
        ax.bar(xs, vals, width=width, color=colors[i % len(colors)], label=name)
        for x, v in zip(xs, vals):
            ax.text(x, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(taus)), [f"τ = {t}" for t in taus])
    top = max((v for vals in series.values() for v in vals), default=0) or 1
    ax.set_ylim(0, top * 1.4)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", ncol=len(series))
    return to_img(fig, title)
