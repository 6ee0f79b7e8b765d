"""The client against hostile servers: trickled replies, huge and infinite
Retry-After, undecodable bodies, replies of every wrong shape, cut replies,
missing usage, and the key quoted back inside long error texts."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time

import pytest

from helpers.openai_server import Fault, openai_server_factory  # noqa: F401 (fixture)
from phi1.errors import Phi1Error
from phi1.llm import ChatRequest, CompletionRequest, LLMClient, LLMConfig, ResponseCache, run_chat, run_completions
from helpers.llm_cases import KEY, chats, llm_cfg
from phi1.llm.batch import import_batch_output
from phi1.llm.redact import ERROR_CHARS, FRAGMENT, Redactor
from phi1.llm.retry import parse_retry_after
from phi1.llm.schema import CHAT_PATH, COMPLETIONS_PATH, MalformedResponse, parse_response
from phi1.llm.usage import describe_usage as describe

def _index(req) -> int:
    return int(req.last_user_message.split()[-1])


def leaked_pieces(text: str, key: str = KEY, piece: int = 5) -> list[str]:
    """Every piece of the key (``piece`` characters or more) found in ``text``."""
    return [key[i:i + piece] for i in range(len(key) - piece + 1) if key[i:i + piece] in text]


# --------------------------------------------------------------------------- 1. deadline per attempt


def test_a_trickled_reply_is_cut_off_by_the_attempt_deadline(openai_server_factory):
    # Each byte arrives well within any per-read timeout; the whole reply would take ~13 s.
    srv = openai_server_factory(responder=lambda r: "x" * 400, per_request_faults=[Fault.trickle(0.02)])
    results, usage = run_chat(llm_cfg(srv.base_url, timeout_s=1.0, concurrency=2), None, chats(2), progress=False)
    assert all(r.ok and r.text == "x" * 400 and r.attempts == 2 for r in results)
    trickled = [r for r in srv.requests if r.outcome == "trickle"]
    assert len(trickled) == 2
    assert all(0 < r.sent_bytes < r.body_bytes for r in trickled), [(r.sent_bytes, r.body_bytes) for r in trickled]
    assert usage["failures"] == {"timeout": 2}
    assert srv.ok_counts() and set(srv.ok_counts().values()) == {1}


# --------------------------------------------------------------------------- 2. Retry-After


def test_parse_retry_after_takes_only_finite_non_negative_waits():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": " 2.5 "}) == 2.5
    for bad in ("inf", "Infinity", "-inf", "nan", "NaN", "-5", "1e999", "soon", ""):
        assert parse_retry_after({"retry-after": bad}) is None, bad
    # an unusable retry-after-ms falls back to Retry-After
    assert parse_retry_after({"retry-after-ms": "inf", "retry-after": "4"}) == 4.0
    assert parse_retry_after({"retry-after": "Fri, 31 Dec 9999 23:59:59 GMT"}) > 1e9  # the caller caps it
    assert parse_retry_after({"retry-after": "Mon, 99 Foo 2024 25:61:61 GMT"}) is None
    assert LLMConfig().retry_after_max_s == 60.0  # the OpenAI SDK's ceiling


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault, asked", [
    (Fault.too_many(3600), "3600"),
    (Fault.too_many("Fri, 31 Dec 9999 23:59:59 GMT"), "e+"),
    (Fault.too_many(None, retry_after_ms="3600000"), "3600"),
])
def test_a_huge_retry_after_waits_the_cap_and_says_so_once(openai_server_factory, fault, asked):
    srv = openai_server_factory(retry_after=None)
    srv.inject(*[fault] * 4)  # four requests in flight all get it
    lines: list[str] = []
    cfg = llm_cfg(srv.base_url, retry_after_max_s=0.4, concurrency=4)
    t0 = time.monotonic()
    results, usage = run_chat(cfg, None, chats(4), progress=False, log=lines.append)
    assert all(r.ok for r in results) and usage["failures"] == {"429": 4}
    assert time.monotonic() - t0 < 30  # not an hour
    first = min(r.received_at for r in srv.requests if r.outcome == "429")
    again = min(r.received_at for r in srv.requests if r.outcome == "ok")
    assert again - first >= 0.35  # the endpoint was held for the cap
    held = [ln for ln in lines if "holding its requests" in ln]
    assert len(held) == 1, lines  # one line for the endpoint, not one per request
    assert srv.base_url in held[0] and "0.4s" in held[0] and asked in held[0]
    assert "retry_after_max_s" in held[0]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", ["inf", "nan", "-5", "1e999", "Infinity"])
def test_a_non_finite_retry_after_is_ignored_with_a_notice(openai_server_factory, value):
    srv = openai_server_factory(retry_after=None)
    srv.inject(Fault.too_many(value), Fault.too_many(value))
    lines: list[str] = []
    results, usage = run_chat(llm_cfg(srv.base_url, concurrency=1), None, chats(2), progress=False,
                              log=lines.append)
    assert all(r.ok for r in results) and usage["retries"] == 2
    notices = [ln for ln in lines if "not a finite number of seconds" in ln]
    assert len(notices) == 1 and value in notices[0]


def test_a_short_retry_after_is_honoured_without_a_notice(openai_server_factory):
    srv = openai_server_factory()
    srv.inject(Fault.too_many(0.3))
    lines: list[str] = []
    results, _ = run_chat(llm_cfg(srv.base_url, concurrency=1), None, chats(1), progress=False, log=lines.append)
    first, second = srv.requests
    assert results[0].ok and second.received_at - first.received_at >= 0.29 and lines == []


# --------------------------------------------------------------------------- 3. redaction


def test_redaction_comes_before_every_cut_at_every_offset():
    red = Redactor([KEY])
    for cut in (ERROR_CHARS, 40, 120):
        for offset in range(0, cut + 2):
            text = "e" * offset + KEY + " and more text after it " * 20
            out = red.clean(text, cut)
            assert len(out) <= cut and not leaked_pieces(out), (cut, offset, out)
            if offset + len("***") <= cut - 1:
                assert "***" in out
    # a key somebody else already cut: any piece of FRAGMENT characters or more is masked
    for size in range(FRAGMENT, len(KEY) + 1):
        for start in (0, len(KEY) - size):
            piece = KEY[start:start + size]
            assert not leaked_pieces(red.redact(f"quoted: {piece}!"), piece=FRAGMENT)
    assert Redactor([KEY]).redact("no secret here") == "no secret here"
    assert Redactor(["x"]).redact("a key of one letter is not a secret: x") .endswith(": x")
    assert Redactor(["ab12"]).redact("short key ab12 masked") == "short key *** masked"


def test_the_key_inside_long_error_texts_never_leaks(openai_server_factory, monkeypatch, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("PHI1_FAULT_KEY", KEY)
    probe = openai_server_factory()
    prefix = len(f"HTTP 400 from {probe.base_url}: ")
    wrapped = len("gave up after 1 attempts: ") + prefix
    # The key at every offset that puts it across a cut: of the whole line (plain and wrapped in
    # "gave up after ..."), and of the server's text alone (where a cut-then-redact client cuts).
    offsets = list(range(ERROR_CHARS - len(KEY) - 2 - wrapped, ERROR_CHARS + 2))

    def error_for(req):
        i = _index(req)
        if i == 2 * len(offsets):  # a Retry-After quoting the key: it shows in the notice
            return Fault.too_many("soon, says " + KEY)
        status = 400 if i % 2 == 0 else 500  # 500: retried, then wrapped in "gave up after ..."
        return Fault.error(status, "x" * offsets[i // 2] + KEY + " was rejected; " + "y" * 400)

    srv = openai_server_factory(api_key=KEY, rules=[(lambda r: True, error_for)])
    lines: list[str] = []
    cfg = llm_cfg(srv.base_url, api_key_env="PHI1_FAULT_KEY", max_retries=0, concurrency=4)
    results, usage = run_chat(cfg, None, chats(2 * len(offsets) + 1), progress=True, log=lines.append)
    assert all(r.error for r in results)
    assert any(r.error.startswith("HTTP 400") for r in results)
    assert any(r.error.startswith("gave up after 1 attempts: HTTP 500") for r in results)
    assert all(len(r.error) <= ERROR_CHARS for r in results)
    assert sum("***" in r.error for r in results) >= len(offsets) // 2  # masked wherever the cut kept it
    out, err = capfd.readouterr()
    blobs = {"errors": json.dumps([r.error for r in results]), "stdout": out, "stderr": err,
             "notices": "\n".join(lines), "usage": json.dumps(usage), "repr": repr(results),
             "logs": "\n".join(r.getMessage() for r in caplog.records)}
    assert "not a finite number" in blobs["notices"]
    for name, blob in blobs.items():
        assert not leaked_pieces(blob), (name, leaked_pieces(blob))


def test_a_key_an_http_header_cannot_carry_is_one_clear_line(openai_server_factory, monkeypatch):
    srv = openai_server_factory()
    monkeypatch.setenv("PHI1_FAULT_KEY", "sk-abc\ndef-ghijklmnop")
    with pytest.raises(Phi1Error, match="PHI1_FAULT_KEY.*cannot carry") as info:
        run_chat(llm_cfg(srv.base_url, api_key_env="PHI1_FAULT_KEY"), None, chats(1), progress=False)
    assert "ghijkl" not in str(info.value) and srv.requests == []
    monkeypatch.setenv("PHI1_FAULT_KEY", f"  {KEY}\n")  # pasted with blanks: they are not part of it
    srv2 = openai_server_factory(api_key=KEY)
    results, _ = run_chat(llm_cfg(srv2.base_url, api_key_env="PHI1_FAULT_KEY"), None, chats(1), progress=False)
    assert results[0].ok


@pytest.mark.parametrize("url", ["localhost:8000/v1", "ftp://h/v1", "http:///v1", "http://h:port/v1", ""])
def test_a_base_url_that_is_not_http_is_one_clear_line(url):
    with pytest.raises(Phi1Error, match="llm.base_urls: .* is not an http"):
        LLMClient(llm_cfg(url))
    with pytest.raises(Phi1Error) as info:
        LLMClient(llm_cfg("user:" + KEY + "@host/v1"))
    assert KEY not in str(info.value)


# --------------------------------------------------------------------------- 4. malformed replies

NESTED = b"[" * 200_000 + b"]" * 200_000  # valid JSON that no recursive parser can read
SHAPES = [
    Fault.undecodable(),  # Content-Encoding: gzip on a plain body
    Fault.malformed(),  # not JSON
    Fault.wrong_usage(),  # "prompt_tokens": [12]
    Fault.wrong_usage({"prompt_tokens": "12", "completion_tokens": 3}),
    Fault.wrong_usage({"prompt_tokens": -4, "completion_tokens": 3}),
    Fault.wrong_usage({"prompt_tokens": 1e400, "completion_tokens": 3}),  # Infinity in JSON
    Fault.wrong_usage([12, 3]),
    Fault.wrong_usage("lots"),
    Fault.shape(lambda p: [p]),
    Fault.shape(lambda p: {**p, "choices": {"0": p["choices"][0]}}),
    Fault.shape(lambda p: {**p, "choices": [None]}),
    Fault.shape(lambda p: {**p, "choices": [{"index": "0", "message": {"content": "x"}}]}),
    Fault.shape(lambda p: {**p, "choices": [{"index": 0, "message": {"content": 12}}]}),
    Fault.shape(lambda p: {**p, "choices": [{"index": 0, "message": {"content": [{"text": 5}]}}]}),
    Fault.shape(lambda p: {**p, "choices": [{"index": 0, "message": "hi"}]}),
    Fault.shape(lambda p: {**p, "choices": [{"index": 0, "message": {"content": "x"}, "finish_reason": 7}]}),
    Fault.shape(lambda p: {**p, "choices": p["choices"] * 2}),  # repeated index
    Fault.shape(lambda p: NESTED),
    Fault.shape(lambda p: b"\xff\xfe\x00garbage"),
]


def test_malformed_replies_of_every_kind_are_retried_and_never_stop_the_others(openai_server_factory):
    n_bad = len(SHAPES)

    def first_try(req):
        i = _index(req)
        if req.attempt != 1:
            return None
        return SHAPES[i] if i < n_bad else Fault("slow_ok", delay=0.3)  # the others are in flight meanwhile

    srv = openai_server_factory(responder=lambda r: f"answer {_index(r)}", rules=[(lambda r: True, first_try)])
    results, usage = run_chat(llm_cfg(srv.base_url, concurrency=8, max_retries=2), None, chats(n_bad + 12),
                              progress=False)
    assert [r.error for r in results] == [None] * len(results)
    assert [r.text for r in results] == [f"answer {i}" for i in range(len(results))]
    assert [r.attempts for r in results] == [2] * n_bad + [1] * 12
    assert usage["failures"] == {"malformed": n_bad}
    assert set(srv.ok_counts().values()) == {1} and len(srv.ok_counts()) == len(results)


def test_a_reply_that_stays_malformed_is_a_failed_request_not_a_crash(openai_server_factory, tmp_path):
    srv = openai_server_factory(rules=[(lambda r: "bad" in r.prompt_text, Fault.undecodable())])
    reqs = chats(3) + [ChatRequest([{"role": "user", "content": "bad 9"}])]
    results, usage = run_chat(llm_cfg(srv.base_url, max_retries=2), tmp_path / "c.sqlite", reqs, progress=False)
    assert all(r.ok for r in results[:3])
    assert results[3].error.startswith("gave up after 3 attempts: undecodable reply")
    assert usage["errors"] == 1 and usage["failures"] == {"malformed": 3}
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert len(cache) == 3  # nothing malformed was cached


_JUNK = [None, True, False, 0, -1, 7, 1.5, float("nan"), float("inf"), 10**30, "", "x", "12", [], {}, [12],
         [None], {"a": 1}, {"text": 5}, [{"text": None}], {"content": []}]


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _mutate(payload: dict, rng: random.Random) -> object:
    """A copy of ``payload`` with one to three random nodes replaced, deleted or wrapped."""
    out = copy.deepcopy(payload)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(out) if p]
        if not paths:
            return rng.choice(_JUNK)
        path = rng.choice(paths)
        parent = out
        for k in path[:-1]:
            parent = parent[k]
        last = path[-1]
        action = rng.random()
        if action < 0.6:
            parent[last] = copy.deepcopy(rng.choice(_JUNK))
        elif action < 0.8:
            del parent[last]
        else:
            parent[last] = [parent[last]] if rng.random() < 0.5 else {"value": parent[last]}
    return out


def _valid_payload(path: str, n: int = 2) -> dict:
    if path == CHAT_PATH:
        choices = [{"index": i, "message": {"role": "assistant", "content": f"text {i}"}, "finish_reason": "stop"}
                   for i in range(n)]
    else:
        choices = [{"index": i, "text": f"text {i}", "finish_reason": "length"} for i in range(n)]
    return {"id": "x", "object": "chat.completion", "choices": choices,
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


def _well_typed(texts, finish, usage, n) -> bool:
    return (isinstance(texts, list) and len(texts) >= n and all(isinstance(t, str) for t in texts)
            and (finish is None or isinstance(finish, str))
            and (usage is None or (set(usage) == {"prompt_tokens", "completion_tokens"}
                                   and all(type(v) is int and v >= 0 for v in usage.values()))))


def test_fuzzed_reply_shapes_give_a_well_typed_reply_or_malformed_never_anything_else():
    rng = random.Random(1234)
    outcomes = {"ok": 0, "malformed": 0}
    for trial in range(4000):
        path = CHAT_PATH if trial % 2 else COMPLETIONS_PATH
        n = 1 + trial % 3
        data = _mutate(_valid_payload(path, n), rng)
        data = json.loads(json.dumps(data))  # what a server can send (NaN/Infinity included)
        try:
            parsed = parse_response(path, data, n)
        except MalformedResponse:
            outcomes["malformed"] += 1
            continue
        assert _well_typed(*parsed, n), (data, parsed)
        outcomes["ok"] += 1
    assert outcomes["ok"] > 200 and outcomes["malformed"] > 2000  # both sides were exercised


def test_fuzzed_reply_shapes_through_the_server(openai_server_factory):
    rng = random.Random(99)
    mutations = [lambda p, s=rng.randint(0, 10**9): _mutate(p, random.Random(s)) for _ in range(40)]

    def first_try(req):
        return Fault.shape(mutations[_index(req)]) if req.attempt == 1 else None

    srv = openai_server_factory(rules=[(lambda r: True, first_try)])
    results, usage = run_chat(llm_cfg(srv.base_url, concurrency=8, max_retries=1), None, chats(40), progress=False)
    assert all(r.ok for r in results)
    assert all(_well_typed(r.texts, r.finish_reason, r.usage, 1) for r in results)
    assert usage["failures"].get("malformed", 0) == sum(r.attempts == 2 for r in results) > 20


# --------------------------------------------------------------------------- 5. cut replies


def test_a_cut_reply_is_reasked_with_more_tokens_then_reported(openai_server_factory, tmp_path):
    long_text = "word " * 200  # 250 tokens for the server
    srv = openai_server_factory(responder=lambda r: long_text)
    cache = tmp_path / "c.sqlite"
    # without reask_cut (generate's case) the cut reply comes back as it is, flagged
    plain, _ = run_chat(llm_cfg(srv.base_url, max_tokens=100), cache, chats(2), progress=False)
    assert all(r.ok and r.truncated and r.finish_reason == "length" and r.cut_reasks == 0 for r in plain)
    assert all(len(r.text) == 400 for r in plain)

    srv.reset_log()
    lines: list[str] = []
    results, usage = run_chat(llm_cfg(srv.base_url, max_tokens=100), cache, chats(2), progress=False,
                              reask_cut=True, log=lines.append)
    # 100 -> 200 tokens (still cut) -> only one re-ask by default: reported as cut
    assert all(r.truncated and r.cut_reasks == 1 for r in results)
    assert [r.body["max_tokens"] for r in srv.requests] == [200, 200]  # the first asks came from the cache
    assert usage["cut_reasks"] == 2 and any("cut at the token limit" in ln for ln in lines)

    srv.reset_log()
    results, usage = run_chat(llm_cfg(srv.base_url, max_tokens=100, cut_retries=3), cache, chats(2),
                              progress=False, reask_cut=True)
    assert all(r.ok and not r.truncated and r.text == long_text and r.cut_reasks == 2 for r in results)
    assert sorted(r.body["max_tokens"] for r in srv.requests) == [400, 400]

    srv.reset_log()
    again, usage = run_chat(llm_cfg(srv.base_url, max_tokens=100, cut_retries=3), cache, chats(2), progress=False,
                            reask_cut=True)
    assert [r.text for r in again] == [r.text for r in results] and srv.requests == []  # replayed from the cache
    assert usage["sent"] == 0 and usage["cost_usd"] == 0

    # factor 1: the same request would be cut again, so it is not re-sent
    still, _ = run_completions(llm_cfg(srv.base_url, max_tokens=50, cut_max_tokens_factor=1.0), None,
                               [CompletionRequest("p")], progress=False, reask_cut=True)
    assert still[0].truncated and still[0].cut_reasks == 0 and len(srv.requests) == 1


def test_a_forced_cut_keeps_finish_reason_length(openai_server_factory):
    srv = openai_server_factory(responder=lambda r: "Point 1: valid code. Educational score: 1 and more",
                                rules=[(lambda r: True, Fault.cut())])
    results, _ = run_chat(llm_cfg(srv.base_url), None, chats(1), progress=False, reask_cut=True)
    assert results[0].truncated and results[0].cut_reasks == 1 and len(srv.requests) == 2


# --------------------------------------------------------------------------- 7. missing usage


def test_missing_usage_is_estimated_and_the_cost_says_so(openai_server_factory, tmp_path):
    srv = openai_server_factory(responder=lambda r: "y" * 80, per_request_faults=[],
                                rules=[(lambda r: _index(r) < 3, Fault.no_usage())])
    priced = dict(price_per_1m_input=2.0, price_per_1m_output=8.0)
    results, usage = run_chat(llm_cfg(srv.base_url, **priced), tmp_path / "c.sqlite", chats(5), progress=False)
    assert all(r.ok for r in results)
    assert [r.usage_estimated for r in results] == [True] * 3 + [False] * 2
    assert all(r.usage["completion_tokens"] == 20 and r.usage["prompt_tokens"] >= 1 for r in results)
    assert usage["usage_missing"] == 3 and usage["cost_basis"] == "estimated"
    assert usage["estimated_completion_tokens"] == 60 and usage["completion_tokens"] == 40
    assert usage["cost_usd"] == pytest.approx((usage["prompt_tokens"] + usage["estimated_prompt_tokens"]) * 2e-6
                                              + 100 * 8e-6)
    line = describe(usage)
    assert "(estimated)" in line and "3 replies without usage" in line and "~$" in line
    assert all(r.cost_usd is not None and r.cost_usd > 0 for r in results)

    # no prices configured: the cost is unknown, never a confident $0.0000
    _, unpriced = run_chat(llm_cfg(srv.base_url), None, chats(2, "other"), progress=False)
    assert unpriced["cost_usd"] is None and unpriced["cost_basis"] == "unpriced"
    assert "cost unknown" in describe(unpriced) and "$0.0000" not in describe(unpriced)
    # everything from the cache: nothing was bought, and that is exact
    _, cached = run_chat(llm_cfg(srv.base_url, **priced), tmp_path / "c.sqlite", chats(5), progress=False)
    assert cached["cost_usd"] == 0 and cached["cost_basis"] == "none"


def test_batch_replies_without_usage_are_estimated_when_their_request_is_known(openai_server_factory, tmp_path):
    import httpx

    srv = openai_server_factory(responder=lambda r: "z" * 40)
    cfg = llm_cfg(price_per_1m_input=1.0, price_per_1m_output=1.0)
    client = LLMClient(cfg, tmp_path / "c.sqlite")
    keys = client.keys(chats(3))
    client.close()
    out = tmp_path / "out.jsonl"
    with httpx.Client() as http, open(out, "w") as f:
        for i, key in enumerate(keys):
            from phi1.llm import request_body

            body = http.post(srv.base_url + "/chat/completions", json=request_body(cfg, chats(3)[i])).json()
            if i == 0:
                del body["usage"]
            if i == 1:
                body["usage"] = {"prompt_tokens": [1], "completion_tokens": 2}  # malformed: not imported
            f.write(json.dumps({"custom_id": key, "response": {"status_code": 200, "body": body}}) + "\n")
    with ResponseCache(tmp_path / "probe.sqlite") as probe:
        report = import_batch_output(probe, out)
    assert report.imported == 2 and "malformed" in report.failed[keys[1]] and report.usage[keys[0]] is None
    results, usage = run_chat(llm_cfg(price_per_1m_input=1.0, price_per_1m_output=1.0, batch_import=[str(out)]),
                              tmp_path / "c.sqlite", chats(3), progress=False)
    assert results[0].ok and results[0].usage_estimated and results[2].ok and not results[2].usage_estimated
    assert "malformed" in results[1].error
    assert usage["cost_basis"] == "estimated" and usage["estimated_completion_tokens"] == 10
    assert math.isfinite(usage["cost_usd"]) and usage["cost_usd"] > 0
