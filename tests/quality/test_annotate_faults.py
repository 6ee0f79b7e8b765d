"""`annotate` with the llm teacher against a hostile endpoint, through the CLI:
failed requests retried by a plain re-run (and only those), the key inside
long error texts, cut replies, malformed replies and missing usage."""

from __future__ import annotations

import json
import re

import pytest

from helpers.openai_server import Fault, openai_server_factory  # noqa: F401 (fixture)
from helpers.llm_cases import doc_index, module_docs
from phi1.cli import main
from phi1.llm.redact import ERROR_CHARS
from phi1.quality.prompts import REASK_CUT
from test_annotate_stage import _labels, _llm_toml, _manifest, _run_dir, _setup, teacher

KEY = "sk-QZ7WKX9PMR4TVB8NJH2YLG6USD3FQC5XWZK"  # no piece of it is a word or lowercase hex


def _leaks(text: str, piece: int = 5) -> list[str]:
    return [KEY[i:i + piece] for i in range(len(KEY) - piece + 1) if KEY[i:i + piece] in text]


# --------------------------------------------------------------------------- 8. failed items


def test_failed_requests_leave_the_stage_not_current_and_a_plain_rerun_resends_exactly_those(
        openai_server_factory, tmp_path, capsys):
    docs = module_docs(20)
    failing = {3, 7, 12}
    srv = openai_server_factory(responder=lambda r: f"Fine.\nEducational score: {doc_index(r) % 6}",
                                rules=[(lambda r: doc_index(r) in failing, Fault("500"))])
    cfg = _setup(tmp_path, _llm_toml(srv.base_url, "samples = 20\nmax_failed_fraction = 0.5", api_key_env="",
                                     max_retries=1).replace("samples = 22\n", ""), docs=docs)
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    out = capsys.readouterr().out
    m = _manifest(cfg)
    assert m["failed"] == 3 and m["counts"]["failed"] == 3
    assert "3 item(s) failed" in out
    labels = {r["id"]: r for r in _labels(cfg)}
    assert {i for i, r in labels.items() if "error" in r} == {f"gen/m{i:03d}.py" for i in failing}
    failed_keys = {r.key for r in srv.requests if r.outcome == "500"}
    assert len(failed_keys) == 3 and len(srv.ok_counts()) == 17

    # The endpoint recovers; the same command again: exactly the three failed requests are sent.
    srv.rules.clear()
    srv.reset_log()
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    assert {r.key for r in srv.requests} == failed_keys and len(srv.requests) == 3
    m = _manifest(cfg)
    assert m["failed"] == 0 and m["counts"]["failed"] == 0 and m["counts"]["valid"] == 20
    assert m["metrics"]["llm"]["cache_hits"] == 17 and m["metrics"]["llm"]["sent"] == 3
    assert all(r["valid"] and "error" not in r for r in _labels(cfg))

    # Now it is current: a third run sends nothing and does not run the stage.
    srv.reset_log()
    capsys.readouterr()
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    assert srv.requests == []
    assert _manifest(cfg)["run_id"] == m["run_id"]


def test_a_request_the_endpoint_rejects_is_invalid_not_failed(openai_server_factory, tmp_path, capsys):
    """HTTP 400 for one prompt (say, too long for the model) gets the same answer in
    every run: it is recorded as invalid with the reason, and the stage is current;
    a 401 (a key to fix) stays failed, so a re-run asks again."""
    docs = module_docs(12)
    srv = openai_server_factory(responder=lambda r: f"Fine.\nEducational score: {doc_index(r) % 6}",
                                rules=[(lambda r: doc_index(r) == 4, Fault("400")),
                                       (lambda r: doc_index(r) == 9, Fault("401"))])
    cfg = _setup(tmp_path, _llm_toml(srv.base_url, "samples = 12\nmax_failed_fraction = 0.5", api_key_env="",
                                     max_retries=1).replace("samples = 22\n", ""), docs=docs)
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    m = _manifest(cfg)
    assert m["failed"] == 1 and m["counts"]["failed"] == 1
    labels = {r["id"]: r for r in _labels(cfg)}
    rejected = labels["gen/m004.py"]
    assert not rejected["valid"] and rejected["invalid"].startswith("rejected by the endpoint: HTTP 400")
    assert "error" in labels["gen/m009.py"]
    srv.rules.pop()  # the key is fixed
    srv.reset_log()
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    sent = {doc_index(r) for r in srv.requests}
    assert sent == {4, 9}  # the rejected one is asked again only because the stage re-runs (no cache of errors)
    assert _manifest(cfg)["failed"] == 0
    srv.reset_log()
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    assert srv.requests == []  # current: rejected requests do not keep a stage stale


# --------------------------------------------------------------------------- 3. the key in error texts


def test_the_key_in_long_error_texts_reaches_no_label_manifest_screen_or_exception(
        openai_server_factory, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("PHI1_TEST_TEACHER_KEY", KEY)
    probe = openai_server_factory()
    prefix = len(f"HTTP 400 from {probe.base_url}: ")
    wrapped = len("gave up after 1 attempts: ") + prefix
    # The key at every offset that puts it across a cut: of the whole line (plain 400, and 500
    # wrapped in "gave up after ..."), and of the server's text alone.
    offsets = list(range(ERROR_CHARS - len(KEY) - 2 - wrapped, ERROR_CHARS + 2))
    docs = module_docs(2 * len(offsets))

    def error_for(req):
        i = doc_index(req)
        status = 400 if i % 2 == 0 else 500
        return Fault.error(status, "x" * offsets[i // 2] + KEY + " is not valid; " + "y" * 300)

    srv = openai_server_factory(api_key=KEY, rules=[(lambda r: True, error_for)])
    annotate = f"samples = {len(docs)}\nmax_failed_fraction = 1.0"
    cfg = _setup(tmp_path, _llm_toml(srv.base_url, annotate, max_retries=0).replace("samples = 22\n", ""),
                 docs=docs)
    assert main(["run", str(cfg), "--only", "annotate"]) == 0  # every request failed, and that is allowed
    labels = _labels(cfg)
    # a 500 is a failure (error), a 400 the endpoint rejecting the request (invalid, with the error text)
    texts = [r.get("error") or r["invalid"].removeprefix("rejected by the endpoint: ") for r in labels]
    assert len(labels) == len(docs) and all(t and len(t) <= ERROR_CHARS for t in texts)
    assert sum("***" in t for t in texts) >= len(offsets) // 2  # masked wherever the cut kept it
    out, err = capfd.readouterr()
    files = {p.name: p.read_text(errors="replace") for p in (_run_dir(cfg)).rglob("*")
             if p.is_file() and p.suffix in (".jsonl", ".json")}
    assert "labels.jsonl" in files and "manifest.json" in files
    for name, blob in {**files, "stdout": out, "stderr": err}.items():
        assert not _leaks(blob), (name, _leaks(blob))

    # the same failures over the limit: the stage stops with an error that quotes the first one
    cfg.write_text(cfg.read_text().replace("max_failed_fraction = 1.0", "max_failed_fraction = 0.05"))
    assert main(["run", str(cfg), "--only", "annotate"]) == 1
    out, err = capfd.readouterr()
    assert "annotation requests failed" in err and "***" in err
    assert not _leaks(out + err), _leaks(out + err)


# --------------------------------------------------------------------------- 5. cut replies


def test_a_cut_reply_is_never_parsed_it_is_reasked_then_recorded_as_invalid(openai_server_factory, tmp_path):
    # The cut half of this reply ends with a parseable score line: it must not become the label.
    head = "Point 1: the file is valid Python.\nEducational score: 1"
    tail = "\nPoint 2: it is practical code.\nPoint 3: docs. Score 4!!"
    assert len(tail) in (len(head), len(head) + 1)

    def respond(req):
        if "ALWAYS_CUT" in req.prompt_text:
            return head + tail
        return teacher(req)

    def cut(req):
        if "ALWAYS_CUT" in req.prompt_text:
            return Fault.cut()
        if "CUT_ONCE" in req.prompt_text and req.body["max_tokens"] == 512:
            return Fault.cut()
        return None

    docs = module_docs(6)
    docs[1]["text"] = "# ALWAYS_CUT\n" + docs[1]["text"]
    docs[2]["text"] = "# CUT_ONCE\n" + docs[2]["text"]
    srv = openai_server_factory(responder=respond, rules=[(lambda r: True, cut)])
    cfg = _setup(tmp_path, _llm_toml(srv.base_url, "samples = 6", api_key_env="").replace("samples = 22\n", ""),
                 docs=docs)
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    labels = {r["id"]: r for r in _labels(cfg)}
    always = labels["gen/m001.py"]
    assert not always["valid"] and always["score"] is None and always["invalid"] == "cut at the token limit"
    assert always["raw"] == head  # the cut text, kept for inspection, never parsed
    assert always["attempts"] == 6  # (first ask + one with more tokens) x (1 + parse_retries)
    asked = [r for r in srv.requests if "ALWAYS_CUT" in r.prompt_text]
    assert sorted(r.body["max_tokens"] for r in asked) == [512, 512, 512, 1024, 1024, 1024]
    assert sum(r.last_user_message == REASK_CUT for r in asked) == 4  # two re-ask rounds, each cut twice
    once = labels["gen/m002.py"]  # cut at 512 tokens, whole at 1024: a valid label
    assert once["valid"] and once["attempts"] == 2
    m = _manifest(cfg)
    assert m["counts"]["cut"] == 1 and m["counts"]["failed"] == 0 and m["failed"] == 0
    assert m["metrics"]["llm"]["cut_reasks"] == 4


# --------------------------------------------------------------------------- 4 + 7. malformed, no usage


def test_malformed_replies_never_stop_the_stage_and_missing_usage_is_estimated(openai_server_factory, tmp_path,
                                                                               capsys):
    shapes = [Fault.undecodable(), Fault.wrong_usage(), Fault.shape(lambda p: {**p, "choices": [7]}),
              Fault.shape(lambda p: b"[" * 100_000)]

    def fault(req):
        i = doc_index(req)
        if i < len(shapes) and req.attempt == 1:
            return shapes[i]
        return Fault.no_usage() if i % 3 == 0 else None

    srv = openai_server_factory(responder=lambda r: f"Fine.\nEducational score: {doc_index(r) % 6}",
                                rules=[(lambda r: True, fault)])
    cfg = _setup(tmp_path, _llm_toml(srv.base_url, "samples = 12", api_key_env="").replace("samples = 22\n", ""),
                 docs=module_docs(12))
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    out = capsys.readouterr().out
    labels = _labels(cfg)
    assert len(labels) == 12 and all(r["valid"] for r in labels)
    usage = _manifest(cfg)["metrics"]["llm"]
    assert usage["failures"] == {"malformed": 4} and usage["errors"] == 0
    assert usage["usage_missing"] == 4 and usage["cost_basis"] == "estimated" and usage["cost_usd"] > 0
    line = next(ln for ln in out.splitlines() if "completion tokens" in ln)
    assert "(estimated)" in line and "4 replies without usage" in line, line


@pytest.mark.parametrize("prices, expect", [("", "cost unknown"), ("price_per_1m_input = 1.0", "(estimated)")])
def test_the_cost_line_never_claims_a_confident_zero(openai_server_factory, tmp_path, capsys, prices, expect):
    srv = openai_server_factory(responder=lambda r: "Educational score: 3", rules=[(lambda r: True,
                                                                                     Fault.no_usage())])
    toml = _llm_toml(srv.base_url, "samples = 3", api_key_env="").replace("samples = 22\n", "")
    toml = re.sub(r"price_per_1m_\w+ = [\d.]+\n?", "", toml) + ("\n" + prices if prices else "")
    cfg = _setup(tmp_path, toml, docs=module_docs(3))
    assert main(["run", str(cfg), "--only", "annotate"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "completion tokens" in ln)
    assert expect in line and not re.search(r"(?<!~)\$0\.0000", line), line
    if not prices:
        assert json.loads(json.dumps(_manifest(cfg)["metrics"]["llm"]))["cost_usd"] is None
