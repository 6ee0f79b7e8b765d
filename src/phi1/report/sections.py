"""One section per stage that ran: what to read from its folder and what to draw.

A builder gets the stage's files (`StageFiles`, which records every file it
reads and every problem it meets) and fills a `Section`. Stages without a
builder of their own (new stages, e.g. synth, decontam) get the generic one:
their summary, counts, scalar metrics and drop reasons, from the manifest.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable

from phi1.report import charts
from phi1.report.html import Section, esc, fmt, key_values, paragraph, table
from phi1.report.paper import TABLE3, paper_reference, stage_family
from phi1.report.run_files import StageFiles, as_number, numbers

Builder = Callable[[StageFiles, Section], None]


# --------------------------------------------------------------------------- generic pieces


def summary_block(f: StageFiles) -> str:
    lines = [x for x in f.get("summary", default=[]) or [] if isinstance(x, str)]
    if not lines:
        return ""
    return '<pre class="summary">' + "\n".join(esc(x) for x in lines) + "</pre>"


def counts_table(f: StageFiles, skip_prefix: str = "dropped_") -> str:
    rows = [(k, v) for k, v in f.table("counts").items()
            if as_number(v) is not None and not k.startswith(skip_prefix)]
    return table(("count", "value"), rows, caption="counts") if rows else ""


def metrics_table(f: StageFiles) -> str:
    rows = [(k, v) for k, v in f.table("metrics").items()
            if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    return table(("metric", "value"), rows, caption="metrics") if rows else ""


def drop_reasons(f: StageFiles, title: str) -> str:
    """A bar chart of the ``dropped_<reason>`` counts (or a ``dropped`` table), when any is non-zero."""
    counts = f.table("counts")
    reasons = {k[len("dropped_"):]: v for k, v in counts.items() if k.startswith("dropped_")}
    for nested in (f.table("counts", "dropped"), f.table("metrics", "dropped"), f.table("dropped")):
        reasons.update(nested)
    reasons = {k: as_number(v) for k, v in reasons.items()}
    reasons = {k: v for k, v in sorted(reasons.items(), key=lambda kv: -(kv[1] or 0)) if v}
    if not reasons:
        return ""
    return charts.bars(list(reasons), list(reasons.values()), title, ylabel="records", colors=[charts.RED] * len(reasons))


def generic(f: StageFiles, sec: Section) -> None:
    sec.add(summary_block(f))
    sec.add(drop_reasons(f, f"{f.name}: drop reasons"))
    sec.add(counts_table(f))
    sec.add(metrics_table(f))


# --------------------------------------------------------------------------- data stages


def ingest(f: StageFiles, sec: Section) -> None:
    funnel = f.table("funnel")
    counts = f.table("counts")
    docs_in = as_number(funnel.get("documents_in", counts.get("documents_in")))
    kept = as_number(funnel.get("kept", counts.get("kept")))
    dropped = funnel.get("dropped") if isinstance(funnel.get("dropped"), dict) else {
        k[len("dropped_"):]: v for k, v in counts.items() if k.startswith("dropped_")}
    drops = sorted(((r, n) for r, n in ((r, as_number(v)) for r, v in dropped.items()) if n), key=lambda x: -x[1])
    if docs_in is None or kept is None:
        f.note("the manifest has no document funnel (funnel.documents_in / kept)")
        generic(f, sec)
        return
    sec.add(charts.funnel("documents in", docs_in, drops, kept, "documents: in, dropped by each filter, kept"))
    broken = as_number(counts.get("broken_records")) or 0
    gap = docs_in - kept - sum(n for _, n in drops)
    if gap and gap != broken:
        f.note(f"the funnel does not add up: {docs_in:,.0f} in, {kept:,.0f} kept, "
               f"{sum(n for _, n in drops):,.0f} dropped ({gap:+,.0f})")
    m = f.table("metrics")
    bpt = as_number(m.get("bytes_per_token"))
    b_in, b_kept = as_number(funnel.get("bytes_in", m.get("bytes_in"))), as_number(funnel.get("bytes_kept", m.get("bytes_kept")))
    rows: list[tuple[Any, ...]] = [("documents", docs_in, kept, _share(kept, docs_in))]
    if b_in is not None and b_kept is not None:
        rows.append(("bytes", b_in, b_kept, _share(b_kept, b_in)))
        if bpt:
            rows.append((f"tokens (estimated at {bpt:g} bytes/token)", round(b_in / bpt), round(b_kept / bpt),
                         _share(b_kept, b_in)))
    sec.add(table(("", "in", "kept", "kept %"), rows, caption="documents and tokens kept"))
    if drops:
        sec.add(table(("drop reason", "documents", "% of input"), [(r, n, _share(n, docs_in)) for r, n in drops],
                      caption="drop reasons"))
    sources = [s for s in f.get("sources", default=[]) or [] if isinstance(s, dict)]
    if sources:
        sec.add(table(("source", "kind", "files", "bytes", "root"),
                      [(s.get("name"), s.get("kind"), s.get("files"), s.get("bytes"), s.get("root")) for s in sources],
                      caption="sources"))


def annotate(f: StageFiles, sec: Section) -> None:
    m = f.table("metrics")
    threshold = as_number(m.get("threshold"))
    labels = f.jsonl("labels.jsonl")
    valid = [v for r, v in numbers(labels, "score") if r.get("valid", True) is not False]
    invalid = len(labels) - len(valid)
    if not labels:  # fall back on the manifest's histogram of whole scores
        hist = f.table("metrics", "score_histogram")
        valid = [float(k) for k, n in hist.items() if _is_number_text(k) for _ in range(int(as_number(n) or 0))]
        invalid = int(f.num("counts", "invalid") or 0)
        if valid:
            f.note("drawn from the manifest's score_histogram (labels.jsonl unavailable)")
    if valid:
        pos = sum(1 for v in valid if threshold is not None and v >= threshold)
        balance = [(f"positive (>= {threshold:g})" if threshold is not None else "positive", pos, charts.GREEN),
                   ("negative", len(valid) - pos, charts.RED)]
        if invalid:
            balance.append(("invalid", invalid, charts.GREY))
        sec.add(charts.score_histogram(valid, threshold, f"teacher scores ({len(valid):,} valid labels)", balance))
    else:
        f.note("no teacher scores to plot")
    usage = usage_records(f.manifest)
    sec.add(key_values([
        ("teacher", m.get("teacher")), ("prompt", m.get("prompt_id")),
        ("labelled", f.get("counts", "labelled")), ("valid", f.get("counts", "valid")),
        ("invalid", f.get("counts", "invalid")), ("mean score", m.get("mean_score")),
        ("positive fraction", m.get("positive_fraction")), ("threshold (classifier.threshold)", threshold),
        ("LLM cost (USD)", sum(u.get("cost_usd") or 0 for _, u in usage) if usage else None),
    ]))


def classifier(f: StageFiles, sec: Section) -> None:
    m = f.table("metrics")
    model = f.table("model")
    task = model.get("task", "binary")
    threshold = as_number(model.get("threshold"))
    val = f.json("validation.json", missing="the ROC and precision-recall curves need the held-out predictions "
                                            "(written by classifier runs since this report existed: re-run "
                                            "`classifier` to get them)")
    y, s = [], []
    if isinstance(val, dict):
        yy, ss = val.get("positive"), val.get("predicted")
        if isinstance(yy, list) and isinstance(ss, list) and len(yy) == len(ss) and \
                all(as_number(v) is not None for v in yy + ss):
            y, s = [int(v) for v in yy], [float(v) for v in ss]
        else:
            f.note("validation.json: 'positive' and 'predicted' are not two number lists of one length")
    matrix = m.get("confusion_matrix")
    ok_matrix = isinstance(matrix, list) and len(matrix) == 2 and all(
        isinstance(r, list) and len(r) == 2 and all(as_number(v) is not None for v in r) for r in matrix)
    if not ok_matrix and matrix is not None:
        f.note("metrics.confusion_matrix is not a 2x2 table of numbers")
    if y or ok_matrix:
        cut = 0.5 if task == "binary" else (threshold if threshold is not None else 0.5)
        sec.add(charts.classifier_curves(y, s, matrix if ok_matrix else None, cut))
    bal = m.get("class_balance") if isinstance(m.get("class_balance"), dict) else {}
    sec.add(key_values([
        ("estimator", model.get("kind")), ("task", task), ("positive at teacher score >=", threshold),
        ("held-out labels", f.get("counts", "validation")), ("training labels", f.get("counts", "train")),
        ("precision", m.get("precision")), ("recall", m.get("recall")), ("F1", m.get("f1")),
        ("accuracy", m.get("accuracy")), ("ROC-AUC", m.get("roc_auc")),
        ("MAE", m.get("mae")), ("RMSE", m.get("rmse")), ("Spearman", m.get("spearman")),
        ("positive rate (all labels)", bal.get("positive_rate")),
        ("positive rate (held out)", m.get("validation_positive_rate")),
        ("embedder", (model.get("embedder") or {}).get("name") if isinstance(model.get("embedder"), dict) else None),
    ]))


def filter_(f: StageFiles, sec: Section) -> None:
    m, c = f.table("metrics"), f.table("counts")
    cut = as_number(m.get("cutoff"))
    cols = f.npz_columns("scores", ("score", "size"))
    pairs = [(a, b) for a, b in zip(cols["score"], cols["size"]) if as_number(a) is not None]
    scores = [float(a) for a, _ in pairs]
    sizes = [float(b) if as_number(b) is not None else 0.0 for _, b in pairs]
    if scores:
        sec.add(charts.filter_scores(scores, sizes, cut, f"quality scores of {len(scores):,} documents"))
        kept_c = as_number(c.get("documents_kept"))
        if cut is not None and kept_c is not None:
            at_or_above = sum(1 for x in scores if x >= cut)
            ties = sum(1 for x in scores if x == cut)
            if not (at_or_above - ties <= kept_c <= at_or_above):
                f.note(f"the recorded scores put {at_or_above:,} documents at or above the cut, the manifest "
                       f"says {kept_c:,.0f} were kept")
    d_in, d_kept = as_number(c.get("documents_in")), as_number(c.get("documents_kept"))
    t_in, t_kept = as_number(c.get("tokens_in_est")), as_number(c.get("tokens_kept_est"))
    rows = []
    if d_in is not None and d_kept is not None:
        rows.append(("documents", d_in, d_kept, _share(d_kept, d_in)))
    if t_in is not None and t_kept is not None:
        rows.append(("tokens (estimated)", t_in, t_kept, _share(t_kept, t_in)))
    if rows:
        sec.add(table(("", "in", "kept", "kept %"), rows, caption="kept fraction"))
    sec.add(key_values([("mode", m.get("mode")), ("cut (keep score >= cut)", cut),
                        ("score p10 / p50 / p90", " / ".join(fmt(m.get(k)) for k in ("score_p10", "score_p50",
                                                                                     "score_p90"))
                         if any(k in m for k in ("score_p10", "score_p50", "score_p90")) else None)]))


def tokenizer(f: StageFiles, sec: Section) -> None:
    tk = f.table("tokenizer")
    sec.add(key_values([("source", tk.get("source")), ("name", tk.get("name")),
                        ("vocabulary", f.get("counts", "vocab_size") or tk.get("vocab_size")),
                        ("bytes per token (on the corpus)", f.get("metrics", "bytes_per_token")),
                        ("trained on documents", f.get("counts", "trained_on_docs")),
                        ("end-of-text token", f"{tk.get('eot')} = {tk.get('eot_id')}" if "eot" in tk else None)]))


def tokenize(f: StageFiles, sec: Section) -> None:
    mix = f.table("tokenize", "mixture")
    if mix:
        sec.add(table(("input", "weight", "documents", "train docs", "validation docs"),
                      [(ref, d.get("weight"), d.get("documents"), d.get("train"), d.get("val"))
                       for ref, d in mix.items() if isinstance(d, dict)], caption="mixture"))
    sec.add(counts_table(f))
    sec.add(key_values([("tokens/s", f.get("metrics", "tokens_per_second")), ("workers", f.get("metrics", "workers")),
                        ("token dtype", f.get("tokenize", "dtype"))]))


def mine(f: StageFiles, sec: Section) -> None:
    sec.add(summary_block(f))
    sec.add(drop_reasons(f, "functions not turned into exercises, by reason"))
    sec.add(counts_table(f))


def training(f: StageFiles, sec: Section) -> None:
    recs = f.jsonl("metrics.jsonl", missing="loss curves drawn from the manifest's evaluations only")
    train = _by_step([r for r in recs if r.get("kind") == "train"])
    evals = _by_step([r for r in recs if r.get("kind") == "eval"])
    if not evals and isinstance(f.get("evals"), list):
        evals = _by_step([r for r in f.get("evals") if isinstance(r, dict)])
    tr = _columns(train, ("step", "loss", "lr", "tokens_per_s", "mfu"), need=("step", "loss"))
    ev = _columns(evals, ("step", "val_loss", "humaneval_solution_loss"), need=("step",))
    if tr["step"] or ev["step"]:
        sec.add(charts.training_curves(tr, ev, f"{f.name}: loss"))
    else:
        f.note("no training or evaluation records to plot")
    m, model = f.table("metrics"), f.table("model")
    mfu = as_number(m.get("mfu"))
    best = f.table("best")
    sec.add(key_values([
        ("steps", f.get("counts", "steps")), ("tokens", f.get("counts", "tokens")),
        ("parameters", model.get("params")), ("non-embedding parameters", model.get("params_non_embedding")),
        ("layers / hidden / heads", f"{model.get('n_layer')} / {model.get('n_embd')} / {model.get('n_head')}"
         if model else None),
        ("precision", f.get("precision")), ("parallel", f.get("parallel")), ("devices", f.get("world_size")),
        ("tokens/s", m.get("tokens_per_s")), ("MFU", f"{100 * mfu:.2f}%" if mfu is not None else None),
        ("train loss (last)", m.get("train_loss")),
        ("validation loss (start -> end)", _arrow(m.get("val_loss_start"), m.get("val_loss"))),
        ("HumanEval-solution loss (start -> end)", _arrow(m.get("humaneval_solution_loss_start"),
                                                          m.get("humaneval_solution_loss"))),
        ("best checkpoint step", best.get("step")),
    ]))


def humaneval_loss(f: StageFiles, sec: Section) -> None:
    """Cross-stage: the loss of the canonical HumanEval solutions before / after pretraining / after finetuning."""
    m = f.table("metrics")
    points = [("before pretraining", m.get("humaneval_solution_loss_before_pretraining")),
              ("after pretraining", m.get("humaneval_solution_loss_after_pretraining")),
              ("after finetuning", m.get("humaneval_solution_loss_after_finetuning"))]
    if stage_family(f.name) == "pretrain":
        points = [("before pretraining", m.get("humaneval_solution_loss_before_pretraining",
                                               m.get("humaneval_solution_loss_start"))),
                  ("after pretraining", m.get("humaneval_solution_loss"))]
    points = [(k, as_number(v)) for k, v in points]
    have = [(k, v) for k, v in points if v is not None]
    if not have:
        f.note("the manifest has no HumanEval-solution losses")
        return
    sec.add(charts.bars([k for k, _ in have], [v for _, v in have],
                        "loss of the canonical HumanEval solutions given their prompts (nats/token)",
                        ylabel="loss", colors=[charts.GREY, charts.BLUE, charts.GREEN][: len(have)]))
    sec.add(table(("model", "HumanEval-solution loss"), points))


def generate(f: StageFiles, sec: Section) -> None:
    g = f.table("generation")
    sec.add(key_values([(k, g.get(k)) for k in ("backend", "model", "problems", "n_problems", "n_samples",
                                                "temperature", "top_p", "max_new_tokens", "dtype", "device")]))
    sec.add(counts_table(f))


_PASS = re.compile(r"^pass@(\d+)$")


def execute(f: StageFiles, sec: Section) -> None:
    m = f.table("metrics")
    ks = sorted((int(_PASS.match(k).group(1)), as_number(v)) for k, v in m.items() if _PASS.match(k))
    ks = [(k, v) for k, v in ks if v is not None]
    canon = as_number(m.get("canonical_pass_rate"))
    labels = [f"pass@{k}" for k, _ in ks] + (["canonical solutions"] if canon is not None else [])
    values = [100 * v for _, v in ks] + ([100 * canon] if canon is not None else [])
    if labels:
        ref = 50.6 if "mbpp" not in str(f.get("problems", default="")).lower() else 55.5
        sec.add(charts.bars(labels, values, "functional correctness (%)", ylabel="%", percent=True,
                            colors=[charts.BLUE] * len(ks) + ([charts.GREY] if canon is not None else []),
                            reference=(ref, f"paper: phi-1 pass@1 {ref}%")))
    else:
        f.note("the manifest has no pass@k metrics")
    sb = f.table("sandbox")
    sec.add(key_values([("samples", f.get("counts", "samples")), ("problems", f.get("counts", "problems")),
                        ("passed", f.get("counts", "passed")), ("failed", f.get("counts", "failed")),
                        ("timed out", f.get("counts", "timed_out")), ("sandbox", sb.get("kind")),
                        ("programs/s", m.get("programs_per_s"))]))
    per_task = f.get("per_task")
    if isinstance(per_task, list) and per_task:
        rows = [r for r in per_task if isinstance(r, dict)]
    else:
        rows = f.jsonl("per_task.jsonl")
    if rows:
        kinds = Counter(_failure_kind(r.get("common_failure")) for r in rows if r.get("common_failure"))
        if kinds:
            sec.add(table(("most common failure, by kind", "tasks"), kinds.most_common(), caption="failures grouped"))
        sec.add('<div class="scroll">' + table(
            ("task", "samples", "correct", "pass@1", "canonical", "most common failure"),
            [(r.get("task_id"), r.get("n"), r.get("correct"), r.get("pass@1"), r.get("canonical"),
              r.get("common_failure") or "") for r in rows],
            sortable=True, caption=f"per task ({len(rows)}; click a column to sort)", cls="per-task") + "</div>")


def grade(f: StageFiles, sec: Section) -> None:
    m = f.table("metrics")
    grades = f.jsonl("grades.jsonl")
    vals = [v for r, v in numbers(grades, "grade")]
    if vals:
        hist = Counter(int(round(v)) for v in vals)
        sec.add(charts.histogram_counts({str(g): hist.get(g, 0) for g in range(0, 11)},
                                        f"grades of {len(vals):,} samples (0-10)", "grade"))
    usage = usage_records(f.manifest)
    sec.add(key_values([("mean grade", f"{m['grade_pct']:.1f}%" if as_number(m.get("grade_pct")) is not None else None),
                        ("graded samples", f.get("counts", "graded")), ("samples", f.get("counts", "samples")),
                        ("tasks", f.get("counts", "tasks")), ("grader", m.get("grader")),
                        ("student", m.get("student")), ("reference solution shown", m.get("include_reference")),
                        ("LLM cost (USD)", sum(u.get("cost_usd") or 0 for _, u in usage) if usage else None)]))
    per_task = m.get("per_task_pct") if isinstance(m.get("per_task_pct"), dict) else {}
    if per_task:
        sec.add('<div class="scroll">' + table(("task", "mean grade %"), list(per_task.items()), sortable=True,
                                                caption="per task (click a column to sort)") + "</div>")


def synth(f: StageFiles, sec: Section) -> None:
    sec.add(summary_block(f))
    m = f.table("metrics")
    kinds = [k for k, v in m.items() if isinstance(v, dict) and "asked" in v and "dropped" in v]
    planned = [k for k, v in m.items() if isinstance(v, dict) and isinstance(v.get("requested_coverage"), dict)]
    if not kinds and planned:
        # no endpoint: the stage wrote prompts (and batch files) and the seed coverage, no records
        rows = []
        for kind in planned:
            for name, c in m[kind]["requested_coverage"].items():
                if isinstance(c, dict) and as_number(c.get("covered")) is not None:
                    rows.append((kind, name, fmt(c.get("covered")), fmt(c.get("total")), fmt(c.get("share"))))
        sec.add(table(("kind", "seed dimension", "covered", "of", "share"), rows,
                      caption="seed coverage of the prompts written (no endpoint: no records generated)"))
        est = f.table("metrics", "estimate")
        files = f.table("metrics", "prompts")
        sec.add(key_values([("requests", est.get("requests")), ("model priced", est.get("model")),
                            ("estimated cost (USD, live / batch)",
                             f"{fmt(est.get('live_usd'))} / {fmt(est.get('batch_usd'))}" if est else None),
                            ("prompt files", ", ".join(files.get("prompts") or []) or None),
                            ("Batch API files", ", ".join(files.get("batch") or []) or None)]))
        return
    if not kinds:
        f.note("the manifest has no per-kind synth metrics (asked / dropped / coverage)")
        sec.add(counts_table(f))
        return
    for kind in kinds:
        km = m[kind]
        dropped = {r: n for r, n in ((r, as_number(v)) for r, v in (km.get("dropped") or {}).items()) if n}
        cov = km.get("coverage") if isinstance(km.get("coverage"), dict) else {}
        coverage = {name: (int(c["covered"]), int(c["total"])) for name, c in cov.items()
                    if isinstance(c, dict) and as_number(c.get("covered")) is not None
                    and as_number(c.get("total"))}
        nn = km.get("nearest_neighbour") if isinstance(km.get("nearest_neighbour"), dict) else {}
        hist = nn.get("histogram") if isinstance(nn.get("histogram"), dict) else None
        hist = {b: int(as_number(v) or 0) for b, v in hist.items()} if hist else None
        asked, kept = as_number(km.get("asked")), as_number(km.get("kept"))
        if asked is not None and kept is not None:
            sec.add(charts.synth_kind(kind, asked, kept, dict(sorted(dropped.items(), key=lambda kv: -kv[1])),
                                      coverage, hist))
        if nn.get("error"):
            f.note(f"{kind}: no nearest-neighbour histogram ({nn['error']})")
        grams = km.get("distinct_ngrams") if isinstance(km.get("distinct_ngrams"), dict) else {}
        sec.add(key_values([
            ("asked", km.get("asked")), ("kept", km.get("kept")), ("invalid replies", km.get("error_rate")),
            ("dropped (share of asked)", km.get("drop_rate")), ("cut at the token limit", km.get("cut")),
            ("prompt", km.get("prompt_id")), ("prompt / completion tokens",
                                              f"{fmt(km.get('prompt_tokens'))} / {fmt(km.get('completion_tokens'))}"),
            ("data cost (USD, list price)", km.get("data_cost_usd")),
            ("seeds covered", cov.get("seeds")),
            ("define the seed's function name", km.get("name_followed")),
            ("distinct 1/2/3/4-grams", " / ".join(fmt(grams.get(f"distinct_{n}")) for n in range(1, 5))
             if grams else None),
            ("nearest-neighbour similarity mean / median", f"{fmt(nn.get('mean'))} / {fmt(nn.get('median'))}"
             if "mean" in nn else None),
        ]).replace("<table", f'<table data-kind="{esc(kind)}"', 1))
    est, llm = f.table("metrics", "estimate"), f.table("metrics", "llm")
    if est or llm:
        sec.add(key_values([("estimated before the run (USD, live / batch)",
                             f"{fmt(est.get('live_usd'))} / {fmt(est.get('batch_usd'))}" if est else None),
                            ("spent (USD)", llm.get("cost_usd")), ("model", llm.get("model") or est.get("model"))]))


def decontam(f: StageFiles, sec: Section) -> None:
    sec.add(summary_block(f))
    m, c = f.table("metrics"), f.table("counts")
    flagged = {k[len("flagged@"):]: as_number(v) for k, v in c.items() if k.startswith("flagged@")}
    similar = {k: as_number(v) for k, v in f.table("metrics", "similar_problems").items()}
    taus = sorted({t for t in (*flagged, *similar) if _is_number_text(t)}, key=float, reverse=True)
    if taus:
        sec.add(charts.per_tau(taus, {"training records flagged": [flagged.get(t) or 0 for t in taus],
                                      "benchmark problems with a similar record": [similar.get(t) or 0
                                                                                   for t in taus]},
                               "similar to the benchmark, per AST match-rate threshold τ"))
    else:
        f.note("the manifest has no per-τ counts (counts flagged@τ, metrics.similar_problems)")
    d = f.table("decontam")
    inputs = d.get("inputs") if isinstance(d.get("inputs"), dict) else {}
    if inputs and taus:
        rows = []
        for ref, info in inputs.items():
            if not isinstance(info, dict):
                continue
            fl = info.get("flagged") if isinstance(info.get("flagged"), dict) else {}
            rows.append((ref, info.get("kind"), info.get("records"),
                         *[(fl.get(t) or {}).get("records") if isinstance(fl.get(t), dict) else None for t in taus]))
        sec.add(table(("input", "kind", "records", *[f"flagged at τ={t}" for t in taus]), rows,
                      caption="training records flagged, per input"))
    pruned = d.get("pruned") if isinstance(d.get("pruned"), dict) else {}
    if pruned:
        sec.add(table(("input", "kept", "dropped"), [(ref, p.get("kept"), p.get("dropped"))
                                                    for ref, p in pruned.items() if isinstance(p, dict)],
                      caption=f"pruned at τ = {fmt(d.get('prune_tau'))} (decontam.<input> datasets)"))
    sec.add(key_values([("benchmark", d.get("problems")), ("signals", ", ".join(map(str, d.get("signals") or []))
                                                           or None),
                        ("snippets compared", c.get("snippets")), ("AST pairs/s", m.get("ast_pairs_per_s"))]))


def table3(decontam: StageFiles, execute: StageFiles, sec: Section) -> None:
    """Table 3 of this run (decontam's per-problem similarity x execute's per-task results), beside the paper's."""
    from phi1.decontam.table3 import table3_from_folders

    t3 = table3_from_folders(decontam.folder, execute.folder)
    decontam.sources += [decontam.rel(decontam.folder / "problems.jsonl"), decontam.rel(decontam.folder / "summary.json")]
    decontam.sources.append(execute.rel(execute.folder / "per_task.jsonl"))
    paper = {(r.tau, r.subset): r for r in TABLE3}
    rows = []
    for r in t3.rows:
        for subset, part in (("similar", r.similar), ("non-similar", r.non_similar), ("total", r.total)):
            p = paper.get((r.tau, subset))
            rows.append((r.tau, subset, part.problems,
                         None if part.pass_at_1 is None else round(100 * part.pass_at_1, 1),
                         p.problems if p else None, p.phi1 if p else None, p.phi1_pruned if p else None,
                         p.starcoder_prompted if p else None))
    sec.add(table(("τ", "HumanEval problems", "here: problems", "here: pass@1 %", "paper: problems",
                   "paper: phi-1 %", "paper: phi-1 retrained on pruned %", "paper: StarCoder-Prompted %"), rows,
                  caption="pass@1 on the problems with / without a similar training record"))
    if t3.without_results:
        sec.add(paragraph(f"{len(t3.without_results)} problems have no results in this run (e.g. generate.limit) "
                          f"and are in neither part."))


def paper_table3() -> str:
    return table(("τ", "HumanEval subset", "problems", "phi-1 %", "phi-1 retrained on pruned %",
                  "StarCoder-Prompted %"),
                 [(r.tau, r.subset, r.problems, r.phi1, r.phi1_pruned, r.starcoder_prompted) for r in TABLE3],
                 caption="the paper's Table 3 (reference)")


BUILDERS: dict[str, tuple[str, Builder]] = {
    "ingest": ("the corpus funnel", ingest),
    "annotate": ("teacher scores and label balance", annotate),
    "embed": ("document embeddings", generic),
    "classifier": ("held-out ROC, precision-recall, confusion matrix", classifier),
    "filter": ("quality scores and the cut", filter_),
    "tokenizer": ("bytes per token", tokenizer),
    "tokenize": ("training tokens", tokenize),
    "mine": ("exercises mined from the corpus", mine),
    "synth": ("synthetic textbooks and exercises", synth),
    "decontam": ("similarity to the benchmark", decontam),
    "pretrain": ("loss, learning rate, throughput", training),
    "finetune": ("loss, learning rate, throughput", training),
    "generate": ("benchmark completions", generate),
    "execute": ("pass@k and per-task results", execute),
    "grade": ("LLM grader", grade),
}


def stage_section(f: StageFiles) -> Section:
    """The section of one finished stage; a failing builder leaves a note, never an exception."""
    family = stage_family(f.name)
    what, builder = BUILDERS.get(f.name) or BUILDERS.get(family) or ("", generic)
    sec = Section(key=f"stage-{f.name}", title=f"{f.name}: {what}" if what else f.name, nav=f.name,
                  stages=(f.name,))
    ref = paper_reference(f.name, f.manifest)
    if ref:
        sec.paper.append(ref)
    _run(builder, f, sec)
    return sec


def _run(builder: Builder, f: StageFiles, sec: Section) -> None:
    try:
        builder(f, sec)
    except Exception as e:  # one broken input costs one section, never the report
        f.note(f"this section could not be completed: {type(e).__name__}: {e}")
    sec.sources = list(f.sources)
    sec.problems = list(f.problems)


def table3_section(decontam_files: StageFiles, execute_files: StageFiles) -> Section:
    sec = Section(key="table3", nav="Table 3", stages=(decontam_files.name, execute_files.name),
                  title=f"Table 3: {execute_files.name} results on problems with / without a similar record "
                        f"({decontam_files.name})")
    try:
        table3(decontam_files, execute_files, sec)
    except Exception as e:  # one broken input costs one section, never the report
        decontam_files.note(f"this section could not be completed: {type(e).__name__}: {e}")
    sec.sources = list(dict.fromkeys(decontam_files.sources + execute_files.sources))
    sec.problems = decontam_files.problems + execute_files.problems
    return sec


def humaneval_loss_section(f: StageFiles) -> Section:
    title = ("HumanEval-solution loss: before and after pretraining" if stage_family(f.name) == "pretrain" else
             "HumanEval-solution loss: before pretraining, after pretraining, after finetuning")
    sec = Section(key="humaneval-loss", stages=(f.name,), nav="HumanEval loss", title=title)
    _run(humaneval_loss, f, sec)
    return sec


# --------------------------------------------------------------------------- helpers


def _share(part: float | None, whole: float | None) -> float | None:
    if part is None or not whole:
        return None
    return round(100 * part / whole, 2)


def _arrow(a: Any, b: Any) -> str | None:
    a, b = as_number(a), as_number(b)
    if a is None and b is None:
        return None
    return f"{fmt(a)} -> {fmt(b)}"


def _is_number_text(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _by_step(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per step (the last written wins: a resumed run logs a step again), in step order."""
    out: dict[float, dict[str, Any]] = {}
    for r in recs:
        s = as_number(r.get("step"))
        if s is not None:
            out[s] = r
    return [out[s] for s in sorted(out)]


def _columns(recs: list[dict[str, Any]], keys: tuple[str, ...], need: tuple[str, ...]) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {k: [] for k in keys}
    for r in recs:
        if any(as_number(r.get(k)) is None for k in need):
            continue
        for k in keys:
            cols[k].append(as_number(r.get(k)))
    for k in keys:  # a column never logged at all is left empty
        if all(v is None for v in cols[k]):
            cols[k] = []
    return cols


_NOISE = re.compile(r"\(<string>, line \d+\)|line \d+|'[^']*'|\"[^\"]*\"|\d+")


def _failure_kind(msg: Any) -> str:
    """'failed: unexpected indent (<string>, line 12)' -> 'failed: unexpected indent'."""
    text = _NOISE.sub("…", str(msg)).strip()
    return re.sub(r"\s+", " ", text)[:100]


def usage_records(obj: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every LLM usage record in a manifest: the dicts that carry a ``cost_usd``."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(obj, dict):
        if "cost_usd" in obj:
            return [(path or "(top level)", obj)]
        for k, v in obj.items():
            found.extend(usage_records(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found.extend(usage_records(v, f"{path}[{i}]"))
    return found
