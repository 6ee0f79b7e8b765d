"""phi1.llm against a real local HTTP server that injects faults."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers.openai_server import Fault, OpenAIServer, openai_server_factory  # noqa: F401 (fixture)
from phi1.errors import Phi1Error
from phi1.llm import (
    BatchExported,
    ChatRequest,
    CompletionRequest,
    LLMClient,
    read_batch_output,
    run_chat,
    run_completions,
)
from helpers.llm_cases import chats, llm_cfg

def _cache_rows(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:  # table not created yet
        return 0
    finally:
        db.close()


def test_every_fault_kind_is_retried_and_each_request_answered_once(openai_server_factory, tmp_path):
    faults = [Fault.too_many(0.01), Fault("500"), Fault("503", retry_after=0.01), Fault.malformed(),
              Fault.drop(), Fault.hangup(), Fault.slow(1.0)]
    srv = openai_server_factory(responder=lambda r: f"answer to {r.last_user_message}",
                                per_request_faults=faults)
    reqs = chats(24)
    reqs.insert(5, reqs[3])  # a duplicate in the same call is sent once
    results, usage = run_chat(llm_cfg(srv.base_url, timeout_s=0.4, concurrency=6), tmp_path / "c.sqlite", reqs,
                              progress=False)
    assert [r.error for r in results] == [None] * len(reqs)
    assert [r.text for r in results] == [f"answer to {m.messages[0]['content']}" for m in reqs]
    assert all(r.attempts == len(faults) + 1 and not r.cached for r in results)
    ok = srv.ok_counts()
    assert len(ok) == 24 and set(ok.values()) == {1}  # nothing lost, nothing answered twice
    assert len(srv.requests) == 24 * (len(faults) + 1)
    assert usage["responses"] == 24 and usage["requests"] == 24 and usage["errors"] == 0
    assert usage["retries"] == 24 * len(faults)
    assert usage["failures"] == {"429": 24, "500": 24, "503": 24, "malformed": 24, "connection": 48, "timeout": 24}
    assert usage["prompt_tokens"] == srv.usage_total()["prompt_tokens"]
    assert usage["completion_tokens"] == srv.usage_total()["completion_tokens"]

    # A re-run is free: everything comes from the cache, nothing reaches the server.
    before = len(srv.requests)
    again, usage2 = run_chat(llm_cfg(srv.base_url), tmp_path / "c.sqlite", reqs, progress=False)
    assert [r.text for r in again] == [r.text for r in results] and all(r.cached for r in again)
    assert len(srv.requests) == before
    assert usage2["cache_hits"] == 24 and usage2["sent"] == 0 and usage2["cost_usd"] == 0


def test_random_faults_under_concurrency(openai_server_factory, tmp_path):
    srv = openai_server_factory(fault_rate=0.4, slow_delay=0.6, seed=7)
    results, usage = run_chat(llm_cfg(srv.base_url, timeout_s=0.3, concurrency=8, max_retries=20),
                              tmp_path / "c.sqlite", chats(80), progress=False)
    assert all(r.ok for r in results)
    assert set(srv.ok_counts().values()) == {1} and len(srv.ok_counts()) == 80
    assert usage["retries"] == usage["sent"] - 80 > 0 and usage["sent"] >= len(srv.requests)


def test_client_errors_are_recorded_not_retried(openai_server_factory, tmp_path):
    srv = openai_server_factory(rules=[(lambda r: "BAD" in r.prompt_text, Fault.bad_request())])
    reqs = chats(5) + [ChatRequest([{"role": "user", "content": "BAD request"}])]
    results, usage = run_chat(llm_cfg(srv.base_url), tmp_path / "c.sqlite", reqs, progress=False)
    assert all(r.ok for r in results[:5])
    bad = results[5]
    assert bad.error.startswith("HTTP 400") and "injected 400" in bad.error and bad.attempts == 1
    assert sum(1 for r in srv.requests if "BAD" in r.prompt_text) == 1
    assert usage["errors"] == 1 and usage["retries"] == 0
    # errors are not cached: the next run asks again (once)
    run_chat(llm_cfg(srv.base_url), tmp_path / "c.sqlite", reqs, progress=False)
    assert sum(1 for r in srv.requests if "BAD" in r.prompt_text) == 2


def test_gives_up_after_max_retries(openai_server_factory, tmp_path):
    srv = openai_server_factory(per_request_faults=[Fault("500")] * 5)
    results, usage = run_chat(llm_cfg(srv.base_url, max_retries=2), tmp_path / "c.sqlite", chats(2), progress=False)
    assert all(r.error.startswith("gave up after 3 attempts: HTTP 500") for r in results)
    assert len(srv.requests) == 6 and usage["errors"] == 2


def test_retry_after_is_honoured(openai_server_factory, tmp_path):
    srv = openai_server_factory()
    srv.inject(Fault.too_many(retry_after=0.3))
    results, _ = run_chat(llm_cfg(srv.base_url, concurrency=1), None, chats(1), progress=False)
    assert results[0].ok
    first, second = srv.requests
    assert first.outcome == "429" and second.outcome == "ok"
    assert second.received_at - first.received_at >= 0.29  # the client waited as told


def test_api_key_is_sent_and_never_leaks(openai_server_factory, tmp_path, monkeypatch, capfd):
    secret = "sk-test-4f9c2a7d1e8b3c6a5f0e9d2c7b4a1f8e"
    monkeypatch.setenv("PHI1_TEST_KEY", secret)
    srv = openai_server_factory(api_key=secret, per_request_faults=[Fault("401")],
                                rules=[(lambda r: "BAD" in r.prompt_text, Fault("401"))])
    cfg = llm_cfg(srv.base_url, api_key_env="PHI1_TEST_KEY", max_retries=0)
    reqs = [ChatRequest([{"role": "user", "content": "BAD"}])] + chats(3)
    results, usage = run_chat(cfg, tmp_path / "c.sqlite", reqs, progress=True)
    # the injected 401 quotes the key back, as real providers do; the client redacts it
    assert results[0].error.startswith("HTTP 401") and "***" in results[0].error
    assert srv.requests and all(r.headers["authorization"] == f"Bearer {secret}" for r in srv.requests)
    cfg_ok = llm_cfg(srv.base_url, api_key_env="PHI1_TEST_KEY")
    srv.clear_faults()
    results2, usage2 = run_chat(cfg_ok, tmp_path / "c.sqlite", reqs, progress=True)
    assert all(r.ok for r in results2)
    out, err = capfd.readouterr()
    blobs = [out, err, json.dumps(usage), json.dumps(usage2), repr(results), repr(results2), repr(cfg)]
    blobs += [p.read_bytes().decode("latin-1") for p in tmp_path.iterdir()]  # cache db, WAL, shm
    assert not any(secret in b for b in blobs)


def test_missing_key_fails_before_sending_but_cached_work_needs_none(openai_server_factory, tmp_path, monkeypatch):
    srv = openai_server_factory()
    monkeypatch.delenv("PHI1_ABSENT_KEY", raising=False)
    cfg = llm_cfg(srv.base_url, api_key_env="PHI1_ABSENT_KEY")
    with pytest.raises(Phi1Error, match="PHI1_ABSENT_KEY"):
        run_chat(cfg, tmp_path / "c.sqlite", chats(2), progress=False)
    assert srv.requests == []
    run_chat(llm_cfg(srv.base_url), tmp_path / "c.sqlite", chats(2), progress=False)  # fill the cache
    results, _ = run_chat(cfg, tmp_path / "c.sqlite", chats(2), progress=False)
    assert all(r.cached for r in results)


def test_cache_is_endpoint_independent_and_completions_work(openai_server_factory, tmp_path):
    a, b = openai_server_factory(), openai_server_factory()
    reqs = [CompletionRequest("def add(a, b):", n=3, stop=["\n\n"], max_tokens=16)]
    res_a, _ = run_completions(llm_cfg(a.base_url), tmp_path / "c.sqlite", reqs, progress=False)
    assert len(res_a[0].texts) == 3 and a.requests[0].endpoint == "completions"
    assert a.requests[0].body["n"] == 3 and a.requests[0].body["stop"] == ["\n\n"]
    res_b, _ = run_completions(llm_cfg(b.base_url + "/"), tmp_path / "c.sqlite", reqs, progress=False)
    assert res_b[0].cached and res_b[0].texts == res_a[0].texts and b.requests == []


def test_concurrency_limit(openai_server_factory, tmp_path):
    srv = openai_server_factory(max_in_flight=3, latency=0.03)
    results, _ = run_chat(llm_cfg(srv.base_url, concurrency=3), None, chats(30), progress=False)
    assert all(r.ok for r in results)
    assert srv.outcomes() == {"ok": 30} and srv.peak_in_flight <= 3


def test_requests_per_minute_limit(openai_server_factory):
    srv = openai_server_factory()
    rpm = 1200  # 20 a second, burst of 20
    results, _ = run_chat(llm_cfg(srv.base_url, concurrency=16, requests_per_minute=rpm), None, chats(70),
                          progress=False)
    assert all(r.ok for r in results)
    times = sorted(r.received_at for r in srv.requests)
    # Sent: at most the burst plus one second's refill in any second (40). Arrivals may bunch
    # when a busy machine delays sends; allow half a second of that. Unlimited: all 70 at once.
    worst = max(sum(1 for t in times if t0 <= t < t0 + 1.0) for t0 in times)
    assert worst <= 20 + 20 + 10


def test_load_balancing_over_two_servers(openai_server_factory, tmp_path):
    a, b = openai_server_factory(latency=0.02), openai_server_factory(latency=0.02)
    results, usage = run_chat(llm_cfg(a.base_url, b.base_url, concurrency=4), None, chats(40), progress=False)
    assert all(r.ok for r in results)
    assert len(a.requests) >= 8 and len(b.requests) >= 8 and len(a.requests) + len(b.requests) == 40
    assert not set(a.ok_counts()) & set(b.ok_counts())
    assert {e["sent"] for e in usage["endpoints"]} == {len(a.requests), len(b.requests)}


def test_failing_endpoint_is_set_aside(openai_server_factory):
    good = openai_server_factory()
    bad = openai_server_factory(rules=[(lambda r: True, Fault("500"))])
    cfg = llm_cfg(bad.base_url, good.base_url, concurrency=4, endpoint_max_failures=2, endpoint_cooldown_s=60)
    results, _ = run_chat(cfg, None, chats(40), progress=False)
    assert all(r.ok for r in results)
    assert len(good.ok_counts()) == 40
    assert len(bad.requests) <= 2 + 4  # failures before cooldown + those already in flight


def test_cancelled_run_resumes_without_resending(openai_server_factory, tmp_path):
    k, n = 6, 20
    srv = openai_server_factory(rules=[(lambda r: r.seq >= k, Fault.slow(30))])
    cache = tmp_path / "c.sqlite"
    cfg = llm_cfg(srv.base_url, concurrency=3, timeout_s=60)

    async def interrupted() -> None:
        client = LLMClient(cfg, cache)
        task = asyncio.create_task(client.chat_many(chats(n), progress=False))
        while _cache_rows(cache) < k:
            await asyncio.sleep(0.02)
        while len(srv.requests) < k + 3:  # the next three are stuck in a slow reply
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        client.close()

    asyncio.run(interrupted())
    first = set(srv.ok_counts())
    assert len(first) == k
    srv.rules.clear()
    srv.reset_log()
    results, usage = run_chat(cfg, cache, chats(n), progress=False)
    assert all(r.ok for r in results) and usage["cache_hits"] == k
    second = srv.ok_counts()
    assert len(second) == n - k and set(second.values()) == {1} and not first & set(second)
    assert all(r.outcome == "ok" for r in srv.requests)


_CHILD = textwrap.dedent("""
    import sys
    from phi1.llm import ChatRequest, LLMConfig, run_chat
    url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cfg = LLMConfig(base_urls=[url], model="test-model", api_key_env="", concurrency=4, timeout_s=60)
    reqs = [ChatRequest([{"role": "user", "content": f"q {i}"}]) for i in range(n)]
    results, usage = run_chat(cfg, cache, reqs, progress=False)
    print(sum(r.ok for r in results), usage["cache_hits"], usage["sent"])
""")


def test_killed_process_resumes_without_resending(openai_server_factory, tmp_path):
    k, n = 10, 30
    srv = openai_server_factory(rules=[(lambda r: r.seq >= k, Fault.slow(30))])
    cache = tmp_path / "c.sqlite"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    args = [sys.executable, str(script), srv.base_url, str(cache), str(n)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while (_cache_rows(cache) < k or len(srv.requests) < k + 4) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait(timeout=10)
    first = set(srv.ok_counts())
    assert len(first) == k == _cache_rows(cache)
    srv.rules.clear()
    srv.reset_log()
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(n), str(k), str(n - k)]
    second = srv.ok_counts()
    assert len(second) == n - k and set(second.values()) == {1} and not first & set(second)
    assert len(srv.requests) == n - k  # nothing finished before the kill was sent again


def test_batch_export_and_import_round_trip(openai_server_factory, tmp_path):
    import httpx

    srv = openai_server_factory(responder=lambda r: f"batched {r.last_user_message}")
    cache = tmp_path / "c.sqlite"
    reqs = chats(5)
    # one reply is already cached: it is not exported
    run_chat(llm_cfg(srv.base_url), cache, reqs[:1], progress=False)
    export = tmp_path / "batch" / "requests.jsonl"
    cfg = llm_cfg(price_per_1m_input=10.0, price_per_1m_output=30.0, batch_export=str(export))
    with pytest.raises(BatchExported) as info:
        run_chat(cfg, cache, reqs, progress=False)
    assert info.value.count == 4 and info.value.paths == [export] and "batch_import" in str(info.value)
    lines = [json.loads(x) for x in export.read_text().splitlines()]
    assert len(lines) == 4 and all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines)
    assert lines[0]["body"]["model"] == "test-model" and lines[0]["body"]["messages"][0]["content"] == "q 1"

    # Play the Batch API: send each body to the server, write an output file; one line fails.
    out = tmp_path / "batch" / "output.jsonl"
    with httpx.Client() as http, open(out, "w") as f:
        for i, line in enumerate(lines):
            if i == 2:
                rec = {"id": f"b{i}", "custom_id": line["custom_id"],
                       "response": {"status_code": 500, "body": {"error": {"message": "boom"}}}, "error": None}
            else:
                r = http.post(srv.base_url + "/chat/completions", json=line["body"])
                rec = {"id": f"b{i}", "custom_id": line["custom_id"],
                       "response": {"status_code": r.status_code, "request_id": f"r{i}", "body": r.json()},
                       "error": None}
            f.write(json.dumps(rec) + "\n")
    assert len(list(read_batch_output(out))) == 4

    sent_before = len(srv.requests)
    cfg = llm_cfg(price_per_1m_input=10.0, price_per_1m_output=30.0, batch_import=[str(out)])
    results, usage = run_chat(cfg, cache, reqs, progress=False)  # no base_urls: nothing can be sent
    assert [r.text for i, r in enumerate(results) if i != 3] == [f"batched q {i}" for i in (0, 1, 2, 4)]
    assert results[3].error and "boom" in results[3].error
    assert usage["batch"]["imported"] == 3 and usage["cache_hits"] == 4 and len(srv.requests) == sent_before
    assert usage["cost_usd"] > 0  # batch replies priced at the batch discount
    # re-importing the same file costs nothing more
    _, usage2 = run_chat(cfg, cache, reqs, progress=False)
    assert usage2["cost_usd"] == 0 and "batch" not in usage2
