"""Stage `annotate` through the CLI, with each teacher, on a tiny ingested corpus
(real standard-library files plus a few planted cases); the llm teacher talks
to the fault-injecting OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from helpers.openai_server import Fault, OpenAIServer, openai_server_factory  # noqa: F401 (fixture)
from helpers.stages import mark_done
from phi1.cli import main
from phi1.config import load_config
from phi1.documents import read_jsonl, write_jsonl
from phi1.quality.prompts import REASK

PHI1 = str(Path(sys.executable).with_name("phi1"))
CONTRACT_KEYS = {"id", "score", "raw", "teacher", "prompt_id", "valid"}


def _corpus() -> list[dict]:
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for p in sorted(root.glob("*.py"))[:160:8]:
        text = p.read_text(errors="replace")
        docs.append({"id": f"stdlib/{p.name}", "text": text,
                     "metadata": {"source": "stdlib", "path": p.name, "size": len(text.encode())}})
    planted = {"planted/unsure.py": "# UNSURE\ndef f(x):\n    return x + 1\n",
               "planted/never.py": "# NEVER\nVALUES = [1, 2, 3]\n"}
    for doc_id, text in planted.items():
        docs.append({"id": doc_id, "text": text, "metadata": {"source": "planted", "path": doc_id,
                                                              "size": len(text)}})
    return docs


def _setup(tmp_path: Path, annotate: str, docs: list[dict] | None = None) -> Path:
    """A config and a finished `ingest/` folder written directly (the folder contract)."""
    cfg_path = tmp_path / "run.toml"
    cfg_path.write_text(f'[run]\nroot = "{tmp_path / "runs"}"\nname = "t"\n\n[annotate]\n{annotate}\n')
    cfg = load_config(cfg_path)
    docs = docs if docs is not None else _corpus()
    ingest = cfg.run_dir / "ingest"
    write_jsonl(ingest / "docs" / "00000.jsonl.gz", docs[::2])
    write_jsonl(ingest / "docs" / "00001.jsonl.gz", docs[1::2])
    mark_done(cfg, "ingest", counts={"documents": len(docs)})
    return cfg_path


def _run_dir(cfg_path: Path) -> Path:
    return load_config(cfg_path).run_dir


def _labels(cfg_path: Path) -> list[dict]:
    return list(read_jsonl(_run_dir(cfg_path) / "annotate" / "labels.jsonl"))


def _manifest(cfg_path: Path) -> dict:
    return json.loads((_run_dir(cfg_path) / "annotate" / "manifest.json").read_text())


# --------------------------------------------------------------------------- heuristic


def test_heuristic_teacher(tmp_path, capsys):
    cfg = _setup(tmp_path, 'teacher = "heuristic"\nsamples = 12\nsize_strata = 3')
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    out = capsys.readouterr().out
    labels = _labels(cfg)
    assert len(labels) == 12 and all(set(r) == CONTRACT_KEYS for r in labels)
    assert all(r["valid"] and 0 <= r["score"] <= 5 and r["teacher"] == "heuristic" for r in labels)
    assert len({r["id"] for r in labels}) == 12
    m = _manifest(cfg)
    assert m["counts"]["corpus_documents"] == 22 and m["counts"]["valid"] == 12
    assert sum(m["metrics"]["score_histogram"].values()) == 12
    assert "teacher heuristic (heuristic-v1): 12 labelled" in out and "(classifier.threshold)" in out
    first = [(r["id"], r["score"]) for r in labels]
    # same seed, same sample and scores; a forced re-run reproduces the file
    assert main(["run", str(cfg), "--only", "annotate", "--force"]) == 0
    assert [(r["id"], r["score"]) for r in _labels(cfg)] == first


# --------------------------------------------------------------------------- labels


def test_labels_teacher_imports_and_reports_unknown_ids(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    first = _corpus()[0]["id"]
    write_jsonl(path, [{"id": first, "score": 4}, {"id": "planted/never.py", "score": None},
                       {"id": "elsewhere/x.py", "score": 2.0}, {"id": "planted/unsure.py", "score": 1.5}])
    cfg = _setup(tmp_path, f'teacher = "labels"\nlabels_path = "{path}"')
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    out = capsys.readouterr().out
    labels = {r["id"]: r for r in _labels(cfg)}
    assert set(labels) == {first, "planted/never.py", "planted/unsure.py"}
    assert labels[first]["score"] == 4.0 and labels[first]["valid"] and labels[first]["teacher"] == "labels"
    assert labels["planted/never.py"]["valid"] is False and labels["planted/never.py"]["score"] is None
    assert _manifest(cfg)["counts"]["unknown_ids"] == 1 and "'elsewhere/x.py'" in out


@pytest.mark.parametrize("lines, message", [
    ([{"id": "planted/never.py", "score": 9}], r"mine\.jsonl:1: score 9 .* not a number in 0\.\.5"),
    ([{"id": "planted/never.py", "score": 1}, {"id": "planted/never.py", "score": 2}], r":2: duplicate id"),
    ([{"score": 1}], r":1: a label needs an 'id'"),
    ([{"id": "nope", "score": 1}], r"none of its 1 ids is a document"),
])
def test_labels_teacher_rejects_bad_files(tmp_path, capsys, lines, message):
    path = tmp_path / "mine.jsonl"
    write_jsonl(path, lines)
    cfg = _setup(tmp_path, f'teacher = "labels"\nlabels_path = "{path}"', docs=_corpus()[-3:])
    assert main(["run", str(cfg), "--only", "annotate"]) == 1
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not (_run_dir(cfg) / "annotate").exists()


# --------------------------------------------------------------------------- llm


def teacher(req) -> str:
    """A deterministic LLM teacher: scores by file size; planted files misbehave."""
    text = req.last_user_message
    if text == REASK:
        if "NEVER" in req.prompt_text:
            return "I cannot rate this."
        return "Educational score: 2"
    if "UNSURE" in text or "NEVER" in text:
        return "It is hard to say."
    return f"Readable code with some explanations.\n**Educational score:** {len(text) % 6}/5"


def _llm_toml(url: str, annotate: str = "", **extra) -> str:
    opts = {"base_urls": [url], "model": "teacher-model", "api_key_env": "PHI1_TEST_TEACHER_KEY",
            "concurrency": 4, "timeout_s": 0.5, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
            "price_per_1m_input": 2.5, "price_per_1m_output": 10.0, **extra}
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in opts.items())
    return f'teacher = "llm"\nsamples = 22\nsize_strata = 2\nmax_chars = 1500\n{annotate}\n[annotate.llm]\n{body}'


SECRET = "sk-phi1-test-6a0e1f27c9b84d3e"


def test_llm_teacher_through_faults_exactly_once_and_free_rerun(openai_server_factory, tmp_path, capfd,
                                                                monkeypatch):
    monkeypatch.setenv("PHI1_TEST_TEACHER_KEY", SECRET)
    srv = openai_server_factory(responder=teacher, api_key=SECRET,
                                per_request_faults=[Fault.too_many(0.01), Fault.drop(), Fault.slow(1.0)])
    srv.inject(Fault("500"), Fault.malformed(), Fault.hangup())
    docs = _corpus()
    cfg = _setup(tmp_path, _llm_toml(srv.base_url), docs=docs)
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    labels = {r["id"]: r for r in _labels(cfg)}
    assert len(labels) == 22 and all(CONTRACT_KEYS <= set(r) for r in labels.values())
    asked = srv.ok_requests()
    assert len(asked) == 22 + 1 + 2  # every document once, unsure re-asked once, never twice
    assert set(srv.ok_counts().values()) == {1}  # every request answered exactly once
    sampled = [i for i in labels if not i.startswith("planted/")]
    for doc_id in sampled:
        r = labels[doc_id]
        assert r["valid"] and r["teacher"] == "llm:teacher-model" and r["prompt_id"] == "reasoning-v1"
        assert r["score"] == float(re.search(r"(\d)/5", r["raw"]).group(1))
    m = _manifest(cfg)
    usage = m["metrics"]["llm"]
    assert usage["responses"] == len(asked) and usage["cost_usd"] > 0 and usage["errors"] == 0
    # re-asked once, then valid
    assert labels["planted/unsure.py"]["score"] == 2.0 and labels["planted/unsure.py"]["attempts"] == 2
    # never a score: invalid after 1 + parse_retries asks, null score, left out of training
    never = labels["planted/never.py"]
    assert not never["valid"] and never["score"] is None and never["attempts"] == 3
    assert never["raw"] == "I cannot rate this."
    assert m["counts"] == {**m["counts"], "valid": 21, "invalid": 1, "reasked": 3, "failed": 0}

    # --force re-runs the stage: every reply comes from the cache, nothing is sent
    before = len(srv.requests)
    assert main(["run", str(cfg), "--only", "annotate", "--force"]) == 0
    assert len(srv.requests) == before
    usage2 = _manifest(cfg)["metrics"]["llm"]
    assert usage2["sent"] == 0 and usage2["cost_usd"] == 0 and usage2["cache_hits"] == usage["requests"]
    assert {r["id"]: r for r in _labels(cfg)} == labels

    # the key is never written anywhere: not the output, the cache, the manifest, the screen
    out, err = capfd.readouterr()
    files = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()] + [cfg]
    assert not any(SECRET in p.read_bytes().decode("latin-1") for p in files)
    assert SECRET not in out + err


def test_llm_teacher_fails_loudly_when_requests_fail(openai_server_factory, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PHI1_TEST_TEACHER_KEY", SECRET)
    srv = openai_server_factory(rules=[(lambda r: True, Fault.bad_request())])
    cfg = _setup(tmp_path, _llm_toml(srv.base_url))
    assert main(["run", str(cfg), "--only", "annotate"]) == 1
    err = capsys.readouterr().err
    assert "22 of 22 annotation requests failed (22 rejected by the endpoint" in err and "HTTP 400" in err
    assert len(srv.requests) == 22  # a 400 is not retried
    assert not (_run_dir(cfg) / "annotate").exists()


def _cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_llm_teacher_killed_run_resumes_without_repeating(openai_server_factory, tmp_path):
    k = 5
    srv = openai_server_factory(responder=teacher, rules=[(lambda r: r.seq >= k, Fault.slow(30))])
    cfg = _setup(tmp_path, _llm_toml(srv.base_url, api_key_env="", timeout_s=60))
    cache = _run_dir(cfg) / "cache" / "llm.sqlite"
    args = [PHI1, "run", str(cfg), "--only", "annotate"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while (_cache_rows(cache) < k or len(srv.requests) < k + 4) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    first = set(srv.ok_counts())
    assert len(first) == k == _cache_rows(cache)
    assert not (_run_dir(cfg) / "annotate").exists()  # no finished-looking output
    srv.rules.clear()
    srv.reset_log()
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "resuming interrupted attempt" in done.stdout
    second = srv.ok_counts()
    assert set(second.values()) == {1} and not first & set(second)  # nothing asked twice
    usage = _manifest(cfg)["metrics"]["llm"]
    assert usage["cache_hits"] == k and usage["sent"] == len(srv.requests) == len(second)
    assert len(_labels(cfg)) == 22


def test_llm_teacher_batch_export_then_import(openai_server_factory, tmp_path, capsys):
    import httpx

    srv = openai_server_factory(responder=teacher)
    export = tmp_path / "batch" / "annotate.jsonl"
    cfg = _setup(tmp_path, _llm_toml("", "parse_retries = 1", api_key_env="", batch_export=str(export)).replace(
        'base_urls = [""]', "base_urls = []"))
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    out = capsys.readouterr().out
    assert "annotate: skipped: exported 22 requests" in out and "batch_import" in out
    assert not (_run_dir(cfg) / "annotate").exists()
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert len(lines) == 22 and {x["url"] for x in lines} == {"/v1/chat/completions"}

    def play_batch(requests: list[dict], path: Path) -> None:  # what the Batch API / vLLM run_batch do
        with httpx.Client() as http, open(path, "w") as f:
            for i, line in enumerate(requests):
                r = http.post(srv.base_url + "/chat/completions", json=line["body"])
                f.write(json.dumps({"id": f"batch_req_{i}", "custom_id": line["custom_id"], "error": None,
                                    "response": {"status_code": r.status_code, "body": r.json()}}) + "\n")

    out1 = tmp_path / "batch" / "out1.jsonl"
    play_batch(lines, out1)
    # round 2: import round 1; the replies without a score need re-asks, exported again
    export2 = tmp_path / "batch" / "annotate-2.jsonl"
    text = cfg.read_text().replace(f'batch_export = "{export}"',
                                   f'batch_export = "{export2}"\nbatch_import = ["{out1}"]')
    cfg.write_text(text)
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    out = capsys.readouterr().out
    lines2 = [json.loads(x) for x in export2.read_text().splitlines()]
    assert "skipped: exported 2 requests" in out and len(lines2) == 2  # the two planted files
    assert all(x["body"]["messages"][-1]["content"] == REASK for x in lines2)
    out2 = tmp_path / "batch" / "out2.jsonl"
    play_batch(lines2, out2)
    cfg.write_text(text.replace(f'batch_import = ["{out1}"]', f'batch_import = ["{out1}", "{out2}"]')
                   .replace(f'batch_export = "{export2}"', 'batch_export = ""'))
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    labels = {r["id"]: r for r in _labels(cfg)}
    assert len(labels) == 22 and labels["planted/unsure.py"]["score"] == 2.0
    assert not labels["planted/never.py"]["valid"]
    usage = _manifest(cfg)["metrics"]["llm"]
    # usage is what this attempt spent: the 2 replies newly imported (round 1 came in the run before)
    assert usage["sent"] == 0 and usage["batch"]["imported"] == 2 and usage["cost_usd"] > 0
    assert usage["cache_hits"] == 24
