"""Datasets as the unit of data flow: references in the config, resolved in one
place (kinds checked, upstream derived, run order), identity vs execution
fields, failed items, and the one validation-split rule."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

import toy_stages
from helpers.stages import mark_done
from phi1.cli import main
from phi1.config import ConfigError, load_config
from phi1.dataflow import Graph
from phi1.documents import Doc, is_validation, write_jsonl
from phi1.pipeline import Pipeline, RunDirectory, read_manifest
from phi1.registry import STAGES, StageSpec
from phi1.sections import option
from phi1.stage import DOCUMENTS, Input, Output, StageContext, StageResult

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.toml"


def demo(tmp_path, *overrides, stages=None):
    return load_config(DEMO, [f"run.root={tmp_path}", *overrides], stages=stages)


# --------------------------------------------------------------------------- the graph


def test_demo_graph_reads_what_the_config_names(tmp_path):
    g = Graph(demo(tmp_path), STAGES)
    assert g.plan("finetune").upstream == ("mine", "synth", "pretrain", "tokenizer")
    assert g.plan("tokenize").upstream == ("filter", "synth", "tokenizer")
    assert g.plan("execute").upstream == ("generate", "decontam")
    assert g.plan("generate").upstream == ("finetune",)
    assert g.plan("grade").upstream == ("generate",)
    order = g.order
    for name, plan in g.plans.items():  # every stage runs after what it reads
        assert all(order.index(up) < order.index(name) for up in plan.upstream)


def test_stages_command_prints_the_graph(tmp_path, capsys):
    assert main(["stages", str(DEMO), "--set", f"run.root={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "finetune    reads inputs = mine + synth.exercises; model = pretrain; tokenizer = tokenizer" in out
    assert "tokenize    reads inputs = filter + synth.textbooks; tokenizer = tokenizer" in out
    assert "-> decontam (contamination), decontam.mine (exercises), decontam.synth.exercises (exercises)" in out
    assert "-> filter (documents), filter.excluded (documents)" in out


def test_a_mixture_changes_the_graph(tmp_path):
    g = Graph(demo(tmp_path, 'tokenize.inputs={filter = 1.0, "filter.excluded" = 0.25, ingest = 0}'), STAGES)
    edges = g.plan("tokenize").edges["inputs"]
    assert [(e.ref, e.weight) for e in edges] == [("filter", 1.0), ("filter.excluded", 0.25)]  # weight 0: unread
    g = Graph(demo(tmp_path, "generate.model=/models/phi-1", 'finetune.inputs={mine = 1}'), STAGES)
    assert g.plan("generate").upstream == ()  # a folder outside the run: no upstream stage
    assert g.plan("generate").externals[0].path == "/models/phi-1"
    assert g.plan("finetune").edges["inputs"][0].weight == 1.0


@pytest.mark.parametrize("override, message", [
    ("finetune.inputs={filter = 1.0}",
     "finetune.inputs: 'filter' is documents, but finetune.inputs takes exercises (datasets of that kind here: "
     "decontam.mine, decontam.synth.exercises, mine, synth.exercises)"),
    ("tokenize.inputs={filtr = 1.0}", "tokenize.inputs: unknown dataset 'filtr' (did you mean 'filter'?)"),
    ("tokenize.inputs={mine = 1.0}", "tokenize.inputs: 'mine' is exercises, but tokenize.inputs takes documents"),
    ("pretrain.data=filter", "pretrain.data: 'filter' is documents, but pretrain.data takes tokens"),
    ("generate.model=tokenize", "generate.model: 'tokenize' is tokens, but generate.model takes model"),
    ("generate.model=nosuchthing", "generate.model: unknown dataset 'nosuchthing'; generate.model takes a dataset "
                                   "or a path"),
    ("tokenize.inputs={filter = 0.0}", "tokenize.inputs names no dataset with a weight > 0"),
    ("tokenize.inputs={filter = -1.0}", "tokenize.inputs.filter = -1.0: a weight must be a finite number >= 0"),
    ("tokenize.inputs={filter = inf}", "tokenize.inputs.filter = inf: must be a finite number"),
    ("tokenize.inputs={filter = 1e300}", "tokenize.inputs.filter = 1e+300: a weight is copies per record, at most 1000"),
    ('decontam.inputs=["mine", "mine"]', "decontam.inputs names 'mine' more than once"),
    ("generate.model=.", "generate.model: '.' is a folder but not a model folder (no config.json)"),
    ("execute.samples=", "execute.samples is empty: name a dataset"),
])
def test_bad_references_are_one_line_errors_naming_the_key(tmp_path, capsys, override, message):
    rc = main(["run", str(DEMO), "--set", f"run.root={tmp_path}", "--set", override])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())  # nothing ran


# --------------------------------------------------------------------------- a plug-in stage


@dataclass
class ShoutConfig:
    """The whole config of a plug-in stage: its inputs and its options."""

    documents: str = option("filter", doc="documents to shout")
    suffix: str = option("!")


def run_shout(ctx: StageContext) -> StageResult:
    from phi1.documents import read_documents

    docs = [{"id": d.id, "text": d.text.upper() + ctx.section.suffix, "metadata": d.metadata}
            for d in read_documents(ctx.input("documents").path)]
    write_jsonl(ctx.output() / "00000.jsonl.gz", docs)
    return StageResult(counts={"documents": len(docs)})


SHOUT = StageSpec("shout", "test_dataflow:run_shout", "a plug-in data stage", config_class=ShoutConfig,
                  produces=(Output("", DOCUMENTS, "docs"),), consumes=(Input("documents", (DOCUMENTS,)),))


def test_a_new_stage_is_one_module_and_one_section(tmp_path):
    """A plug-in stage declares its datasets; tokenize can name its output
    without any change to tokenize (or any other stage)."""
    stages = STAGES + (SHOUT,)
    cfg = demo(tmp_path, "shout.suffix=?!", 'tokenize.inputs={shout = 1.0, filter = 0.5}', stages=stages)
    g = Graph(cfg, stages)
    assert g.plan("tokenize").upstream == ("shout", "filter", "tokenizer")
    assert g.order.index("shout") < g.order.index("tokenize")
    mark_done(cfg, "filter", stages=stages)
    write_jsonl(cfg.run_dir / "filter" / "docs" / "0.jsonl.gz", [{"id": "a", "text": "x = 1", "metadata": {}}])
    lines: list[str] = []
    assert Pipeline(cfg, lines.append, stages).run(only=["shout"]) == {"shout": "ran"}
    out = cfg.run_dir / "shout" / "docs" / "00000.jsonl.gz"
    import gzip

    assert json.loads(gzip.open(out, "rt").read())["text"] == "X = 1?!"
    m = read_manifest(cfg.run_dir / "shout")
    assert m["datasets"]["documents"][0]["ref"] == "filter"
    assert m["outputs"] == {"shout": {"kind": "documents", "path": "docs", "exists": True}}
    with pytest.raises(ConfigError, match=r"unknown key 'sufix' in \[shout\] \(did you mean 'suffix'\?\)"):
        demo(tmp_path, "shout.sufix=x", stages=stages)


def test_a_cycle_is_a_config_error(tmp_path):
    loop = StageSpec("loop", "toy_stages:run_double", "reads its own consumer",
                     produces=(Output("", "toy-items", "items"),), consumes=(Input("inputs", ("toy-summary",)),),
                     config_class=toy_stages.SkipConfig)  # inputs = "double"
    stages = (toy_stages.DOUBLE, loop)
    cfg = load_config(None, [f"run.root={tmp_path}", "double.inputs=loop"], stages=stages)
    with pytest.raises(ConfigError, match="cycle: loop.inputs reads double; double.inputs reads loop; change one"):
        Graph(cfg, stages)


def test_a_cycle_names_only_the_keys_that_make_it(tmp_path):
    # mine reads synth's textbooks while synth drops copies of mine's exercises: the message names
    # those two keys, not every stage downstream of the loop
    cfg = demo(tmp_path, 'mine.inputs={"synth.textbooks"=1}')
    with pytest.raises(ConfigError) as e:
        Graph(cfg, STAGES)
    assert str(e.value) == ("the stages' inputs form a cycle: synth.dedup_against reads mine; "
                            "mine.inputs reads synth.textbooks; change one of these keys")


# --------------------------------------------------------------------------- identity vs execution


@pytest.mark.parametrize("section, execution, identity", [
    ("pretrain", ["pretrain.log_every=1", "pretrain.parallel=fsdp", "pretrain.micro_batch_size=4",
                  "pretrain.device=cpu", "pretrain.compile=true", "pretrain.keep_checkpoints=9"],
     ["pretrain.lr=0.5", "pretrain.max_steps=7"]),
    ("ingest", ["ingest.executor.workers=1", "ingest.executor.kind=ray", "ingest.executor.ray.cpus_per_task=3"],
     ["ingest.executor.tasks=7", "ingest.min_bytes=1"]),
    ("embed", ["embed.batch_size=3", "embed.device=cpu"], ["embed.max_tokens=64"]),
    ("tokenize", ["tokenize.workers=1", "tokenize.chunk_chars=10"], ["tokenize.seq_len=64"]),
    ("generate", ["generate.batch_size=1"], ["generate.max_new_tokens=3"]),
])
def test_execution_fields_never_change_a_stage_identity(tmp_path, section, execution, identity):
    base = demo(tmp_path).section_hash(section)
    for o in execution:
        assert demo(tmp_path, o).section_hash(section) == base, o
    for o in identity:
        assert demo(tmp_path, o).section_hash(section) != base, o


def test_changing_an_execution_field_keeps_finished_work(tmp_path):
    stages = toy_stages.TOY
    cfg = load_config(None, [f"run.root={tmp_path}"], stages=stages)
    Pipeline(cfg, lambda m: None, stages).run()
    faster = load_config(None, [f"run.root={tmp_path}", "count.workers=8", "count.delay=0.001"], stages=stages)
    assert {s.name: s.state for s in RunDirectory(faster, stages).statuses()} == {"count": "done", "double": "done"}
    changed = load_config(None, [f"run.root={tmp_path}", "count.items=2"], stages=stages)
    assert [s.state for s in RunDirectory(changed, stages).statuses()] == ["stale", "stale"]


def test_force_discards_an_interrupted_attempt_saying_what(tmp_path):
    stages = toy_stages.TOY
    cfg = load_config(None, [f"run.root={tmp_path}"], stages=stages)
    Pipeline(cfg, lambda m: None, stages).run()
    partial = tmp_path / "demo" / "count.partial"
    (partial / "checkpoints" / "step-0000100").mkdir(parents=True)
    (partial / "checkpoints" / "step-0000100" / "model.safetensors").write_bytes(b"x" * 1000)
    (partial / ".attempt.json").write_text(json.dumps(RunDirectory(cfg, stages).identity(stages[0])))
    lines: list[str] = []
    Pipeline(cfg, lines.append, stages).run(only=["count"], force=True)
    notice = [x for x in lines if "discarding" in x]
    assert len(notice) == 1 and "1 checkpoint(s) up to step-0000100" in notice[0] and "--force" in notice[0]


# --------------------------------------------------------------------------- failed items


def test_a_stage_with_failed_items_is_not_current(tmp_path):
    stages = toy_stages.TOY
    cfg = load_config(None, [f"run.root={tmp_path}", "count.flaky=2"], stages=stages)
    lines: list[str] = []
    assert Pipeline(cfg, lines.append, stages).run() == {"count": "ran", "double": "ran"}
    assert any("2 item(s) failed; re-run the same command to retry exactly those" in x for x in lines)
    st = {s.name: s for s in RunDirectory(cfg, stages).statuses()}
    assert st["count"].state == "stale" and "2 failed item(s)" in st["count"].reason
    assert st["double"].state == "stale"
    # a plain re-run runs it again; when nothing fails any more it is current
    fixed = load_config(None, [f"run.root={tmp_path}", "count.flaky=2"], stages=stages)
    assert Pipeline(fixed, lambda m: None, stages).run()["count"] == "ran"
    runs = (tmp_path / "demo" / "count" / "runs.log").read_text().split()
    assert len(runs) == 1  # each attempt starts from a fresh folder
    ok = load_config(None, [f"run.root={tmp_path}", "count.flaky=0"], stages=stages)
    Pipeline(ok, lambda m: None, stages).run()
    assert Pipeline(ok, lambda m: None, stages).run() == {"count": "current", "double": "current"}


# --------------------------------------------------------------------------- one split rule


def test_no_validation_document_is_in_any_training_split(tmp_path):
    """tokenize and mine split by the same rule on the source document, so
    finetuning's validation exercises come from documents pretraining never saw."""
    import textwrap

    from phi1.synth.mine import mine_documents
    from phi1.train.tokenize import MixtureInput, document_stream

    def module(i: int) -> str:
        return textwrap.dedent(f'''\
            def helper_{i}(values):
                """Return the sum of the squares of values, number {i}."""
                total = 0
                for v in values:
                    total += v * v + {i}
                return total
            ''')

    docs = [Doc(f"src/m{i}.py", module(i), {"path": f"m{i}.py"}) for i in range(300)]
    write_jsonl(tmp_path / "docs" / "0.jsonl.gz", [{"id": d.id, "text": d.text, "metadata": d.metadata}
                                                    for d in docs])
    fraction, seed = 0.2, 11
    mined = mine_documents(docs, validation_fraction=fraction, seed=seed)
    val_sources = {r.metadata["doc_id"] for r in mined.val}
    assert 30 < len(val_sources) < 90
    source_of = {d.text: d.id for d in docs}
    stream = document_stream([MixtureInput("filter", 1.0, tmp_path / "docs")], fraction, seed)
    pretrain_sources = {source_of[text] for split, text in stream if split == "train"}
    assert len(pretrain_sources) + len(val_sources) == len(docs)
    assert not (val_sources & pretrain_sources)
    assert val_sources == {d.id for d in docs if is_validation(d.id, fraction, seed)}


def test_split_settings_moved_to_run(tmp_path):
    with pytest.raises(ConfigError, match="mine.validation_fraction has moved to run.validation_fraction"):
        demo(tmp_path, "mine.validation_fraction=0.1")
    # and it is part of the identity of the stages that split, not of the others
    a, b = demo(tmp_path), demo(tmp_path, "run.validation_fraction=0.2")
    rd_a, rd_b = RunDirectory(a), RunDirectory(b)
    for name, changes in (("tokenize", True), ("mine", True), ("pretrain", False), ("filter", False)):
        spec = rd_a.spec(name)
        assert (rd_a.identity(spec)["config_hash"] != rd_b.identity(spec)["config_hash"]) is changes, name


# --------------------------------------------------------------------------- inputs outside the run, before any work


@pytest.mark.parametrize("override, message", [
    ("generate.problems=humanevl", "generate.problems = 'humanevl': problems file not found: humanevl"),
    ("decontam.problems=mbpp:", "decontam.problems = 'mbpp:': "),
    ("generate.model=/no/such/model", "generate.model: '/no/such/model' does not exist"),
    # Table 3 joins generate's task ids with decontam's: found only after generating and executing
    (f"decontam.problems=mbpp:{REPO}/tests/decontam/data/mbpp_sample.jsonl",
     "execute reads datasets about different problem sets: generate.problems = 'humaneval', decontam.problems"),
])
def test_missing_inputs_outside_the_run_fail_before_the_first_stage(tmp_path, capsys, override, message):
    # found only when generate starts, this is a typo discovered after hours of training
    rc = main(["run", str(DEMO), "--set", f"run.root={tmp_path}", "--set", override])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "demo" / "ingest.partial").exists()
    rc = main(["stages", str(DEMO), "--set", f"run.root={tmp_path}", "--set", override])
    assert rc == 2 and message in capsys.readouterr().err


def test_a_broken_mbpp_file_fails_before_the_first_stage(tmp_path, capsys):
    bad = tmp_path / "mbpp.jsonl"
    bad.write_text(json.dumps({"task_id": 1, "text": "t", "code": "def f():\n    return 1\n",
                               "test_list": ["assert f() == 1"], "test_setup_code": "import ("}) + "\n")
    rc = main(["run", str(DEMO), "--set", f"run.root={tmp_path}", "--set", f"generate.problems=mbpp:{bad}"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{bad}:1: 'test_setup_code' is not Python" in err, err
