"""`generate` with the endpoint backend, against the local OpenAI-compatible
test server, through the CLI."""

from __future__ import annotations

from pathlib import Path

from helpers.openai_server import Fault, OpenAIServer, openai_server_factory  # noqa: F401 (fixture)
from helpers.stages import mark_done
from phi1.cli import main
from phi1.config import load_config
from phi1.documents import read_jsonl, write_jsonl
from phi1.evaluate.config import DEFAULT_STOPS
from phi1.pipeline import read_manifest

PROBLEMS = [
    {"task_id": f"Toy/{i}", "prompt": f'def f{i}(a, b):\n    """Return a + b + {i}."""\n',
     "canonical_solution": f"    return a + b + {i}\n", "test": f"def check(c):\n    assert c(1, 2) == {3 + i}\n",
     "entry_point": f"f{i}"}
    for i in range(3)
]




def write_config(tmp_path: Path, base_url: str, generate: str) -> Path:
    write_jsonl(tmp_path / "problems.jsonl", PROBLEMS)
    path = tmp_path / "run.toml"
    path.write_text(f"""
[run]
root = "{tmp_path / 'runs'}"
name = "ep"
seed = 3

[generate]
backend = "endpoint"
problems = "{tmp_path / 'problems.jsonl'}"
max_new_tokens = 48
{generate}

[generate.llm]
base_urls = ["{base_url}"]
model = "phi1-finetuned"
api_key_env = ""
backoff_base_s = 0.01
backoff_max_s = 0.05
""")
    return path


def completion_responder(req):
    """n choices that run on past the function (the stops must cut them)."""
    n = int(req.body.get("n") or 1)
    return [f"\n    return a + b  # choice {k}\n\n\ndef unrelated():\n    pass\n" for k in range(n)]


def test_sampling_requests_carry_the_parameters_and_samples_are_cut(openai_server_factory, tmp_path, capsys):
    srv = openai_server_factory(responder=completion_responder, per_request_faults=[Fault.too_many(0.01)])
    config = write_config(tmp_path, srv.base_url, "n_samples = 3\ntemperature = 0.8\ntop_p = 0.9")
    cfg = load_config(config)
    mark_done(cfg, "finetune")
    assert main(["generate", "--config", str(config)]) == 0

    answered = srv.ok_requests()
    assert len(answered) == 3 and {r.endpoint for r in answered} == {"completions"}
    by_prompt = {r.body["prompt"]: r.body for r in answered}
    seeds = set()
    for p in PROBLEMS:
        body = by_prompt[p["prompt"].rstrip()]  # stripped as bigcode-evaluation-harness does
        assert body["model"] == "phi1-finetuned" and body["n"] == 3
        assert body["temperature"] == 0.8 and body["top_p"] == 0.9 and body["max_tokens"] == 48
        assert body["stop"] == DEFAULT_STOPS
        seeds.add(body["seed"])
    assert len(seeds) == 3  # one seed per task, derived from run.seed

    out = cfg.run_dir / "generate"
    samples = list(read_jsonl(out / "samples.jsonl"))
    assert [s["task_id"] for s in samples] == [p["task_id"] for p in PROBLEMS for _ in range(3)]
    assert [s["completion"] for s in samples[:3]] == [f"    return a + b  # choice {k}\n\n" for k in range(3)]
    assert list(read_jsonl(out / "problems.jsonl")) == PROBLEMS
    m = read_manifest(out)
    gen = m["generation"]
    assert gen["backend"] == "endpoint" and gen["model"] == "phi1-finetuned"
    assert gen["n_samples"] == 3 and gen["temperature"] == 0.8 and gen["seed"] == 3
    assert m["counts"]["samples"] == 9 and gen["usage"]["responses"] == 3

    # A forced re-run is answered from the run's LLM cache: nothing new is sent.
    sent = len(srv.requests)
    assert main(["generate", "--config", str(config), "--force"]) == 0
    assert len(srv.requests) == sent
    assert list(read_jsonl(out / "samples.jsonl")) == samples


def test_greedy_asks_once_per_task_and_copies(openai_server_factory, tmp_path):
    srv = openai_server_factory(responder=completion_responder)
    config = write_config(tmp_path, srv.base_url, "n_samples = 2\ntemperature = 0.0\nstop = [\"\\nprint\"]")
    cfg = load_config(config)
    mark_done(cfg, "finetune")
    assert main(["generate", "--config", str(config)]) == 0
    bodies = [r.body for r in srv.ok_requests()]
    assert len(bodies) == 3
    assert all("n" not in b and b["temperature"] == 0.0 and "top_p" not in b and "seed" not in b for b in bodies)
    assert all(b["stop"] == ["\nprint"] for b in bodies)
    samples = list(read_jsonl(cfg.run_dir / "generate" / "samples.jsonl"))
    assert len(samples) == 6 and samples[0] == samples[1]
    # "\ndef" is not a stop in this config: the completion keeps the next function.
    assert "def unrelated" in samples[0]["completion"]


def test_failed_requests_are_failed_items_and_a_rerun_sends_exactly_those(openai_server_factory, tmp_path, capsys):
    """A request that fails after the client's retries leaves its task with empty
    completions (failing, so pass@k still covers every problem) and the stage
    stale; a request the endpoint rejects as such (400) is not retried."""
    srv = openai_server_factory(responder=completion_responder,
                                rules=[(lambda r: "f1(" in r.prompt_text, Fault("500")),
                                       (lambda r: "f2(" in r.prompt_text, Fault.bad_request())])
    config = write_config(tmp_path, srv.base_url, "")
    config.write_text(config.read_text().replace("backoff_base_s = 0.01", "backoff_base_s = 0.01\nmax_retries = 1"))
    cfg = load_config(config)
    mark_done(cfg, "finetune")
    assert main(["generate", "--config", str(config)]) == 0
    out = cfg.run_dir / "generate"
    m = read_manifest(out)
    assert m["failed"] == 1 and m["generation"]["usage"]["rejected_tasks"] == 1
    samples = {s["task_id"]: s["completion"] for s in read_jsonl(out / "samples.jsonl")}
    assert samples["Toy/1"] == "" and samples["Toy/2"] == "" and samples["Toy/0"]
    assert "1 item(s) failed" in capsys.readouterr().out

    srv.rules.clear()  # the endpoint recovers
    srv.reset_log()
    assert main(["generate", "--config", str(config)]) == 0
    assert sorted(r.prompt_text.split("(")[0][-2:] for r in srv.requests) == ["f1", "f2"]  # not f0: cached
    m = read_manifest(out)
    assert m["failed"] == 0
    assert all(c for c in (s["completion"] for s in read_jsonl(out / "samples.jsonl")))


def test_when_every_request_fails_the_stage_fails_with_one_line(openai_server_factory, tmp_path, capsys):
    srv = openai_server_factory(responder=completion_responder, rules=[(lambda r: True, Fault.bad_request())])
    config = write_config(tmp_path, srv.base_url, "")
    cfg = load_config(config)
    mark_done(cfg, "finetune")
    assert main(["generate", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: generate: all 3 completion requests") and "400" in err
    assert not (cfg.run_dir / "generate").exists()
