"""The `synth` stage against the OpenAI-compatible test server with scripted replies:
every drop reason counted exactly, server faults retried, failed requests re-sent
alone, references deduplicated, no-endpoint mode, batch files, the dry run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from helpers.openai_server import Fault, OpenAIServer
from helpers.stages import mark_done
from synth_fixtures import REFERENCES, Script

from phi1.cli import main as cli_main
from phi1.config import load_config
from phi1.documents import read_documents
from phi1.errors import InputError, Phi1Error
from phi1.llm.batch import read_batch_output
from phi1.manifest import read_manifest
from phi1.pipeline import Pipeline
from phi1.synth.records import read_exercises, write_exercises

EXERCISE_KINDS = [
    "valid", "valid", "valid", "assert_failed", "syntax_error", "no_code", "duplicate_of:0", "near_of:1",
    "cut_then_fits", "cut_always", "imports", "few_asserts", "runtime_error", "timeout", "no_function",
    "valid:3", "reference:clamp", "reference:clamp_near",
]
TEXTBOOK_KINDS = ["valid", "valid", "no_code", "syntax_error", "too_short", "duplicate_of:0", "near_of:1",
                  "valid_surrogate"]


def synth_config(tmp_path: Path, base_url: str | None, *extra: str, textbooks: int = len(TEXTBOOK_KINDS),
                 exercises: int = len(EXERCISE_KINDS)):
    overrides = [f"run.root={tmp_path / 'runs'}", "run.name=t", "run.validation_fraction=0.2",
                 f"synth.textbooks={textbooks}", f"synth.exercises={exercises}", "synth.exercise_max_tokens=200",
                 "synth.textbook_max_tokens=1000", "synth.chunk_size=5", "synth.diversity_sample=0",
                 'synth.llm.model="teacher"', 'synth.llm.api_key_env=""', "synth.llm.backoff_base_s=0.01",
                 "synth.llm.backoff_max_s=0.05", "synth.llm.price_per_1m_input=1.0",
                 "synth.llm.price_per_1m_output=2.0", "execute.timeout_s=1.0", "execute.workers=2", *extra]
    if base_url:
        overrides.append(f'synth.llm.base_urls=["{base_url}"]')
    return load_config(None, overrides)


def run_synth(cfg, force: bool = False) -> dict:
    Pipeline(cfg, echo=lambda s: None).run(only=["synth"], force=force)
    return read_manifest(cfg.run_dir / "synth")


def write_mine(cfg, script: Script) -> None:
    """A finished `mine` holding, as mine would cut it, the program seeds 16 and 17 reproduce."""
    from phi1.synth.mine import mine_source

    folder = mark_done(cfg, "mine")
    program = REFERENCES["clamp"].replace("NAME", script.names[16]).split("\n\n\nassert")[0] + "\n"
    recs, _ = mine_source(program, "corpus-doc", "corpus/clamp.py")
    assert len(recs) == 1
    write_exercises(folder / "train.jsonl.gz", recs)
    write_exercises(folder / "val.jsonl.gz", [])


def test_every_drop_reason_is_counted_exactly(tmp_path):
    cfg = synth_config(tmp_path, "http://placeholder/v1", "synth.dedup_against=mine")
    script = Script(cfg, {"exercises": EXERCISE_KINDS, "textbooks": TEXTBOOK_KINDS})
    permanent_400 = (lambda req: "Function: `" + script.names[15] + "`" in req.last_user_message,
                     Fault.bad_request())
    # every distinct request fails four times (a 429 with Retry-After, a 500, a malformed 200, a dropped
    # connection) before it is answered
    faults = [Fault.too_many(0.01), Fault.server_error(), Fault.malformed(), Fault.drop()]
    with OpenAIServer(script.respond, rules=[permanent_400], per_request_faults=faults) as srv:
        cfg = synth_config(tmp_path, srv.base_url, "synth.dedup_against=mine")
        write_mine(cfg, script)
        m = run_synth(cfg)
        c = m["counts"]
        expected_ex = {"assert_failed": 1, "syntax_error": 1, "no_code": 1, "duplicate": 1, "near_duplicate": 1,
                       "cut": 1, "imports": 1, "few_asserts": 1, "runtime_error": 1, "timeout": 1,
                       "no_function": 1, "request_failed": 1, "duplicate_of_reference": 1,
                       "near_duplicate_of_reference": 1}
        assert {k[len("exercises_dropped_"):]: v for k, v in c.items()
                if k.startswith("exercises_dropped_")} == expected_ex
        assert c["exercises_kept"] == 4  # seeds 0, 1, 2 and the cut reply that fit when re-asked
        assert c["exercises_kept"] + sum(expected_ex.values()) == c["exercises_asked"] == len(EXERCISE_KINDS)
        assert {k[len("textbooks_dropped_"):]: v for k, v in c.items() if k.startswith("textbooks_dropped_")} == {
            "no_code": 1, "syntax_error": 1, "too_short": 1, "duplicate": 1, "near_duplicate": 1}
        assert c["textbooks_kept"] == 3
        assert c["failed"] == 1 and m["failed"] == 1

        # what the server saw: each distinct request answered exactly once, after its four faults
        ok = srv.ok_counts()
        assert set(ok.values()) == {1}
        assert len(ok) == len(EXERCISE_KINDS) - 1 + 2 + len(TEXTBOOK_KINDS)  # minus the 400, plus 2 cut re-asks
        assert srv.outcomes()["400"] == 1  # not retried
        assert {srv.outcomes()[k] for k in ("429", "500", "malformed", "drop")} == {len(ok)}
        ex = m["metrics"]["exercises"]
        assert ex["cut"] == 1 and m["metrics"]["llm"]["cut_reasks"] == 2

        # the records: mine's format, the seed, prompt id, model and cost in each
        out = cfg.run_dir / "synth" / "exercises"
        recs = list(read_exercises(out / "train.jsonl.gz")) + list(read_exercises(out / "val.jsonl.gz"))
        assert sorted(r.id for r in recs) == [f"synth-exercise-{i:08d}" for i in (0, 1, 2, 8)]
        for r in recs:
            assert r.source == "synth:teacher" and r.metadata["prompt_id"] == "exercise-v1"
            assert r.metadata["model"] == "teacher" and r.metadata["cost_usd"] > 0
            assert r.metadata["seed"]["name"] == r.metadata["function"] and r.metadata["asserts"] == 3
            compile(r.prompt + r.solution, r.id, "exec")
        cut = next(r for r in recs if r.id.endswith("08"))
        assert cut.metadata["cut_reasks"] == 1
        docs = list(read_documents(cfg.run_dir / "synth" / "textbooks"))
        assert [d.id for d in docs] == [f"synth-textbook-{i:08d}" for i in (0, 1, 7)]
        assert "Done ? here." in docs[2].text  # the lone surrogate is replaced, the record kept
        assert "```python" in docs[0].text and docs[0].metadata["prompt_id"] == "textbook-v1"

        # the failed request is re-sent alone by a re-run (the stage is not current), and now succeeds
        srv.clear_faults()
        srv.reset_log()
        assert run_synth(cfg)["counts"]["exercises_kept"] == 5
        assert [r.outcome for r in srv.requests] == ["ok"]
        assert script.names[15] in srv.requests[0].last_user_message


def test_manifest_reports_cost_error_rate_and_coverage(tmp_path):
    kinds = ["valid"] * 5 + ["syntax_error"]
    with OpenAIServer(lambda r: script.respond(r)) as srv:
        cfg = synth_config(tmp_path, srv.base_url, textbooks=2, exercises=6)
        script = Script(cfg, {"exercises": kinds, "textbooks": ["valid", "valid"]})
        m = run_synth(cfg)
    ex = m["metrics"]["exercises"]
    assert ex["error_rate"] == pytest.approx(1 / 6, abs=1e-4) and ex["kept"] == 5
    est = m["metrics"]["estimate"]
    assert est["requests"] == 8 and est["live_usd"] > 0 and est["batch_usd"] == pytest.approx(est["live_usd"] / 2,
                                                                                               abs=0.01)
    spent = m["metrics"]["llm"]
    assert spent["cost_usd"] > 0 and spent["sent"] == 8
    # the data's own cost: every reply used, at list price
    assert m["metrics"]["data_cost_usd"] == pytest.approx(
        (spent["prompt_tokens"] * 1.0 + spent["completion_tokens"] * 2.0) / 1e6, rel=1e-6)
    cov = ex["coverage"]
    assert cov["seeds"] == 5 and cov["name"]["covered"] == 5 and cov["concept"]["total"] >= 350
    assert ex["requested_coverage"]["seeds"] == 6
    assert set(ex["distinct_ngrams"]) == {"records", "distinct_1", "distinct_2", "distinct_3", "distinct_4"}
    assert ex["imports"] == {"collections": 1, "math": 1}  # the word-count and gcd bodies import inside
    assert "nearest_neighbour" not in ex  # diversity_sample = 0
    assert any("estimate:" in line for line in m["summary"]) and any("spent:" in line for line in m["summary"])


@pytest.mark.slow  # loads all-MiniLM-L6-v2 (~20 s on a busy 2-core machine)
def test_nearest_neighbour_histogram_over_embed_vectors(tmp_path):
    with OpenAIServer(lambda r: script.respond(r)) as srv:
        cfg = synth_config(tmp_path, srv.base_url, "synth.diversity_sample=4", textbooks=2, exercises=5)
        script = Script(cfg, {"exercises": ["valid"] * 5, "textbooks": ["valid", "valid"]})
        m = run_synth(cfg)
    nn = m["metrics"]["exercises"]["nearest_neighbour"]
    assert nn["records"] == 4 and sum(nn["histogram"].values()) == 4 and 0 < nn["mean"] <= 1
    assert m["metrics"]["textbooks"]["nearest_neighbour"]["records"] == 2


def test_without_an_endpoint_only_prompts_and_a_batch_file(tmp_path, capsys):
    cfg = synth_config(tmp_path, None, textbooks=3, exercises=4)
    m = run_synth(cfg)
    folder = cfg.run_dir / "synth"
    assert m["counts"]["exercises_kept"] == 0 and m["counts"]["textbooks_kept"] == 0
    assert list(read_documents(folder / "textbooks")) == []
    assert list(read_exercises(folder / "exercises" / "train.jsonl.gz")) == []
    with gzip.open(folder / "prompts" / "exercises.jsonl.gz", "rt") as fh:
        prompts = [json.loads(line) for line in fh]
    assert [p["id"] for p in prompts] == [f"synth-exercise-{i:08d}" for i in range(4)]
    assert prompts[0]["prompt_id"] == "exercise-v1" and prompts[0]["messages"][-1]["role"] == "user"
    batch = sorted((folder / "batch").iterdir())
    assert [p.name for p in batch] == ["requests-exercises-0000.jsonl", "requests-textbooks-0000.jsonl"]
    lines = [line for p in batch for line in p.read_text().splitlines()]
    assert len(lines) == 7
    first = json.loads(lines[0])
    assert first["url"] == "/v1/chat/completions" and first["body"]["model"] == "teacher"
    assert any(s.startswith("no endpoint") for s in m["summary"])
    assert m["metrics"]["exercises"]["requested_coverage"]["seeds"] == 4
    assert m["metrics"]["estimate"]["requests"] == 7


def batch_output(requests: Path, respond, vllm: bool) -> str:
    """Answer a Batch API input file the way OpenAI's Batch API (or `vllm run-batch`) writes its output."""
    out = []
    for n, line in enumerate(requests.read_text().splitlines()):
        req = json.loads(line)

        class R:  # what the scripted responder reads
            last_user_message = req["body"]["messages"][-1]["content"]

        text, finish = respond(R), "stop"
        limit = 4 * req["body"]["max_tokens"]  # a server stops at max_tokens (~4 characters a token)
        if len(text) > limit:
            text, finish = text[:limit], "length"
        body = {"id": f"chatcmpl-{n}", "object": "chat.completion", "model": req["body"]["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": 100, "completion_tokens": len(text) // 4, "total_tokens": 0}}
        if vllm:  # `vllm run-batch` has written the completion itself as the response (no envelope)
            out.append({"id": f"vllm-{n}", "custom_id": req["custom_id"], "response": body, "error": None})
        else:
            out.append({"id": f"batch_req_{n}", "custom_id": req["custom_id"],
                        "response": {"status_code": 200, "request_id": f"r{n}", "body": body}, "error": None})
    return "\n".join(json.dumps(o) for o in out) + "\n"


@pytest.mark.parametrize("vllm", [False, True], ids=["openai-batch", "vllm-run-batch"])
def test_batch_files_round_trip(tmp_path, vllm):
    kinds = ["valid", "valid", "assert_failed"]
    export = tmp_path / "batch" / "synth.jsonl"
    cfg = synth_config(tmp_path, None, f"synth.llm.batch_export={export}", textbooks=0, exercises=3)
    script = Script(cfg, {"exercises": kinds})
    outcomes = Pipeline(cfg, echo=lambda s: None).run(only=["synth"])
    assert outcomes["synth"] == "skipped"  # exported, stopped: nothing sent, nothing written
    files = sorted(export.parent.glob("synth-exercises-*.jsonl"))
    assert [f.name for f in files] == ["synth-exercises-0000.jsonl"]
    assert len(files[0].read_text().splitlines()) == 3
    answers = tmp_path / "batch" / "output.jsonl"
    answers.write_text(batch_output(files[0], script.respond, vllm))
    assert len(list(read_batch_output(answers))) == 3
    cfg = synth_config(tmp_path, None, f"synth.llm.batch_import=['{answers}']", textbooks=0, exercises=3)
    m = run_synth(cfg)
    assert m["counts"]["exercises_kept"] == 2 and m["counts"]["exercises_dropped_assert_failed"] == 1
    assert m["metrics"]["llm"]["sent"] == 0 and m["metrics"]["llm"]["batch"]["imported"] == 3



def test_batch_output_of_another_export_is_one_line_saying_so(tmp_path):
    # replies to other requests (another export, other counts or seeds): nothing matches
    other = tmp_path / "other.jsonl"
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}]}
    other.write_text(json.dumps({"custom_id": "f" * 64, "response": {"status_code": 200, "body": body}}) + "\n")
    cfg = synth_config(tmp_path, None, f"synth.llm.batch_import=['{other}']", textbooks=0, exercises=3)
    with pytest.raises(Phi1Error, match="none of the 3 requests has a usable reply in synth.llm.batch_import"):
        Pipeline(cfg, echo=lambda s: None).run(only=["synth"])
    assert not (cfg.run_dir / "synth").exists()

def test_batch_files_with_a_round_of_re_asks_for_cut_replies(tmp_path):
    kinds = ["valid:0", "cut_then_fits", "valid:2"]
    first = tmp_path / "batch" / "round1.jsonl"
    cfg = synth_config(tmp_path, None, f"synth.llm.batch_export={first}", textbooks=0, exercises=3)
    script = Script(cfg, {"exercises": kinds})
    assert Pipeline(cfg, echo=lambda s: None).run(only=["synth"])["synth"] == "skipped"
    out1 = tmp_path / "batch" / "out1.jsonl"
    out1.write_text(batch_output(tmp_path / "batch" / "round1-exercises-0000.jsonl", script.respond, False))
    # round 2: the cut reply is asked again with twice the tokens, exported to the new file
    second = tmp_path / "batch" / "round2.jsonl"
    cfg = synth_config(tmp_path, None, f"synth.llm.batch_import=['{out1}']", f"synth.llm.batch_export={second}",
                       textbooks=0, exercises=3)
    assert Pipeline(cfg, echo=lambda s: None).run(only=["synth"])["synth"] == "skipped"
    reasks = [json.loads(line) for line in (tmp_path / "batch" / "round2-exercises-0000.jsonl").read_text()
              .splitlines()]
    assert len(reasks) == 1 and reasks[0]["body"]["max_tokens"] == 400
    out2 = tmp_path / "batch" / "out2.jsonl"
    out2.write_text(batch_output(tmp_path / "batch" / "round2-exercises-0000.jsonl", script.respond, True))
    cfg = synth_config(tmp_path, None, f"synth.llm.batch_import=['{out1}', '{out2}']", textbooks=0, exercises=3)
    m = run_synth(cfg)
    assert m["counts"]["exercises_kept"] == 3 and m["metrics"]["llm"]["sent"] == 0


def test_seed_count_beyond_the_space_is_a_config_error(tmp_path):
    seeds = tmp_path / "space"
    seeds.mkdir()
    (seeds / "concepts.txt").write_text("A\n  T\n    one\n")
    (seeds / "audiences.txt").write_text("x\n")
    (seeds / "styles.txt").write_text("s: style\n")
    (seeds / "difficulties.txt").write_text("d: level\n")
    (seeds / "scenarios.toml").write_text('[[scenario]]\nname = "shop"\nobjects = ["items"]\n')
    cfg = synth_config(tmp_path, None, f"synth.seed_space={seeds}", textbooks=2, exercises=0)
    with pytest.raises(InputError, match=r"synth.textbooks = 2 is more than the seed space holds \(1 distinct"):
        Pipeline(cfg, echo=lambda s: None).run(only=["synth"])


def test_dry_run_prints_plan_coverage_and_cost(capsys, repo_root):
    assert cli_main(["synth-plan", str(repo_root / "configs" / "phi-1.toml"),
                     "--set", "synth.textbooks=3000", "--set", "synth.exercises=5000"]) == 0
    out = capsys.readouterr().out
    assert "distinct seeds:" in out and "textbooks: 3,000 requests" in out and "exercises: 5,000 requests" in out
    assert "exercises seed coverage:" in out and "function names" in out
    assert "estimate: 8,000 requests" in out and "with a Batch API" in out


def config_file(tmp_path: Path, base_url: str, exercises: int, chunk_size: int) -> Path:
    path = tmp_path / "synth.toml"
    path.write_text(f"""
[run]
root = "{tmp_path / 'runs'}"
name = "t"
validation_fraction = 0.2

[execute]
timeout_s = 1.0
workers = 2

[synth]
exercises = {exercises}
exercise_max_tokens = 200
chunk_size = {chunk_size}
diversity_sample = 0

[synth.llm]
base_urls = ["{base_url}"]
model = "teacher"
api_key_env = ""
timeout_s = 60
concurrency = 2
price_per_1m_input = 1.0
price_per_1m_output = 2.0
""")
    return path


def cache_rows(path: Path) -> int:
    import sqlite3

    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_killed_run_resumes_and_nothing_paid_for_is_sent_again(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    kinds = ["valid:0", "assert_failed", "valid:1", "no_code", "valid:2", "duplicate_of:0", "syntax_error",
             "valid:3", "imports", "valid:4", "few_asserts", "runtime_error"]
    k = 7  # replies before the server hangs: chunks 1 and 2 (3 seeds each) finish, chunk 3 has one reply
    with OpenAIServer(lambda r: script.respond(r), rules=[(lambda r: r.seq >= k, Fault.slow(30))]) as srv:
        path = config_file(tmp_path, srv.base_url, len(kinds), 3)
        cfg = load_config(path)
        script = Script(cfg, {"exercises": kinds})
        partial = cfg.run_dir / "synth.partial" / "parts"
        cache = cfg.run_dir / "cache" / "llm.sqlite"
        phi1 = str(Path(sys.executable).with_name("phi1"))
        args = [phi1, "synth", "--config", str(path)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (
                    cache_rows(cache) >= k and (partial / "exercises-00001.json").exists()):
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(timeout=10)
        first = srv.ok_counts()
        assert len(first) == k and set(first.values()) == {1}
        assert not (cfg.run_dir / "synth").exists()  # no finished-looking output

        srv.rules.clear()
        srv.reset_log()
        done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr
        assert "resuming interrupted attempt" in done.stdout
        assert "2 of 4 chunks were finished by the interrupted attempt" in done.stdout
        second = srv.ok_counts()
        assert set(second.values()) == {1} and not set(first) & set(second)  # nothing paid for is sent again
        assert len(first) + len(second) == len(kinds)
    m = read_manifest(cfg.run_dir / "synth")
    assert m["metrics"]["llm"]["sent"] == len(second) and m["metrics"]["llm"]["cache_hits"] == 1
    c = m["counts"]
    reasons = ("duplicate", "assert_failed", "no_code", "syntax_error", "imports", "few_asserts", "runtime_error")
    assert c["exercises_kept"] == 5
    assert {k[len("exercises_dropped_"):]: v for k, v in c.items() if k.startswith("exercises_dropped_")} == \
        dict.fromkeys(reasons, 1)


def test_an_unusable_embedder_costs_the_histogram_not_the_data(tmp_path):
    with OpenAIServer(lambda r: script.respond(r)) as srv:
        cfg = synth_config(tmp_path, srv.base_url, "synth.diversity_sample=3", "embed.backend=hf_causal_lm",
                           f"embed.model={tmp_path}", textbooks=0, exercises=3)  # a folder with no model
        script = Script(cfg, {"exercises": ["valid:0", "valid:1", "valid:2"]})
        m = run_synth(cfg)
    assert m["counts"]["exercises_kept"] == 3
    assert "error" in m["metrics"]["exercises"]["nearest_neighbour"]


def test_prompt_files_split_and_use_the_clients_cache_keys(tmp_path):
    from phi1.llm import LLMClient
    from phi1.synth.plan import make_plans, write_prompts
    from phi1.synth.seeds import SeedSpace

    cfg = synth_config(tmp_path, None, textbooks=0, exercises=7).section("synth")
    plan = make_plans(cfg, SeedSpace.load(), 0)[0]
    written = write_prompts([plan], tmp_path, cfg.llm, lambda s: None, per_file=3)
    assert written["batch"] == [f"batch/requests-exercises-{g:04d}.jsonl" for g in range(3)]
    lines = [json.loads(x) for f in written["batch"] for x in (tmp_path / f).read_text().splitlines()]
    assert [len((tmp_path / f).read_text().splitlines()) for f in written["batch"]] == [3, 3, 1]
    with LLMClient(cfg.llm, None) as client:  # what a live run (or batch_import) looks up
        assert [x["custom_id"] for x in lines] == client.keys([plan.request(plan.seed(i)) for i in range(7)])
