"""Rate limiter, backoff, load-balancer choices, request keys, cache, batch files;
and the test server itself (it must really produce the faults it claims)."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from helpers.openai_server import Fault, OpenAIServer
from phi1.errors import InputError, Phi1Error
from phi1.llm import ChatRequest, LLMConfig, ResponseCache, export_batch, read_batch_output, request_body, request_key
from phi1.llm.endpoints import EndpointPool
from phi1.llm.limits import RateLimiter
from phi1.llm.retry import backoff_delay, is_retryable_status, parse_retry_after
from phi1.llm.schema import CHAT_PATH, estimate_tokens, parse_response


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_rate_limiter_keeps_to_the_rate_with_a_fake_clock():
    clock = FakeClock()
    rpm = RateLimiter(120, clock=clock, sleep=clock.sleep)  # 2 a second, burst 2

    async def go() -> list[float]:
        times = []
        for _ in range(10):
            await rpm.acquire()
            times.append(clock.now)
        return times

    times = asyncio.run(go())
    assert times[:2] == [0.0, 0.0] and times[-1] == pytest.approx(4.0)
    tpm = RateLimiter(6000, clock=clock, sleep=clock.sleep)  # 100 tokens a second
    start = clock.now

    async def tokens() -> None:
        await tpm.acquire(100)  # the whole bucket
        await tpm.acquire(250)  # bigger than the bucket: waits for a full one, goes into debt
        tpm.adjust(250 - 50)  # the reply used 50: the estimate's surplus comes back
        await tpm.acquire(100)

    asyncio.run(tokens())
    assert clock.now - start == pytest.approx(1.5)
    assert RateLimiter(0).unlimited


def test_backoff_and_retry_after():
    rng = random.Random(0)
    delays = [backoff_delay(a, 1.0, 8.0, rng) for a in range(10)]
    assert all(0 <= d <= min(8.0, 2 ** a) for a, d in enumerate(delays))
    assert backoff_delay(0, 1.0, 8.0, rng, retry_after=20) == 20
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({}) is None and parse_retry_after({"retry-after": "soon"}) is None
    assert all(is_retryable_status(s) for s in (408, 409, 429, 500, 502, 503, 504))
    assert not any(is_retryable_status(s) for s in (400, 401, 403, 404, 422))


def test_endpoint_pool_choices():
    clock = FakeClock()
    pool = EndpointPool(["http://a/v1/", "http://b/v1"], max_failures=2, cooldown_s=10, clock=clock)
    a, b = pool.endpoints
    assert a.url == "http://a/v1"
    a.in_flight = 3
    assert pool.pick() is b  # least busy
    a.in_flight = 0
    for _ in range(2):
        a.in_flight += 1
        pool.release(a, ok=False, endpoint_fault=True)
    assert a.cooldown_until == 10 and {pool.pick().url for _ in range(4)} == {b.url}  # set aside
    b.cooldown_until = 20
    assert pool.pick() is a  # everyone set aside: probe the one rested longest
    clock.now = 11
    b.in_flight += 1
    pool.release(b, ok=True, endpoint_fault=False, retry_after=5)
    assert b.cooldown_until == 0 and b.not_before == 16
    assert {pool.pick().url for _ in range(4)} == {a.url}  # b is held by its Retry-After
    rr = EndpointPool(["http://a", "http://b", "http://c"], strategy="round_robin")
    assert [rr.pick().url for _ in range(4)] == ["http://a", "http://b", "http://c", "http://a"]
    assert EndpointPool(["http://user:pw@h:1/v1?key=x"]).endpoints[0].label == "http://h:1/v1"


def test_request_keys_bodies_and_estimates():
    cfg = LLMConfig(model="m", max_tokens=100, temperature=0.2)
    req = ChatRequest([{"role": "user", "content": "x" * 400}], n=2, stop=["\n"], extra={"top_p": 0.9})
    body = request_body(cfg, req)
    assert body == {"model": "m", "messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100,
                    "temperature": 0.2, "n": 2, "stop": ["\n"], "top_p": 0.9}
    assert "n" not in request_body(cfg, ChatRequest([{"role": "user", "content": "x"}]))
    assert estimate_tokens(body) == 100 + 2 * 100
    same = request_key(CHAT_PATH, json.loads(json.dumps(body)))
    assert request_key(CHAT_PATH, body) == same
    assert request_key(CHAT_PATH, {**body, "temperature": 0.3}) != same
    assert request_key("/v1/completions", body) != same
    o1 = LLMConfig(model="m", max_tokens_field="max_completion_tokens")
    assert "max_completion_tokens" in request_body(o1, req) and "max_tokens" not in request_body(o1, req)
    texts, finish, usage = parse_response(CHAT_PATH, {"choices": [
        {"index": 1, "message": {"content": "b"}, "finish_reason": "length"},
        {"index": 0, "message": {"content": "a"}, "finish_reason": "stop"}]})
    assert texts == ["a", "b"] and finish == "stop" and usage is None  # no usage: the client estimates


def test_cache_and_batch_files(tmp_path):
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put("k1", CHAT_PATH, {"model": "m"}, {"choices": []})
        assert cache.get("k1") == {"choices": []} and cache.get("k2") is None and len(cache) == 1
        assert cache.get_many([f"k{i}" for i in range(1200)]) == {"k1": {"choices": []}}  # chunked IN (...)
    (tmp_path / "bad.sqlite").write_text("not a database at all, just text " * 100)
    with pytest.raises(Phi1Error, match="bad.sqlite cannot be opened .file is not a database.: it is damaged; nothing was sent"):
        ResponseCache(tmp_path / "bad.sqlite").get("k")
    items = [(f"{i:064x}", CHAT_PATH, {"model": "m", "i": i}) for i in range(5)]
    paths = export_batch(tmp_path / "req.jsonl", items, max_per_file=2)
    assert [p.name for p in paths] == ["req-part00000.jsonl", "req-part00001.jsonl", "req-part00002.jsonl"]
    assert sum(len(p.read_text().splitlines()) for p in paths) == 5
    broken = tmp_path / "out.jsonl"
    broken.write_text('{"custom_id": "a", "response": {"status_code": 200, "body": {}}}\n{oops\n')
    with pytest.raises(InputError, match=r"out\.jsonl:2: not valid JSON"):
        list(read_batch_output(broken))
    broken.write_bytes(b'\xef\xbb\xbf{"custom_id": "a", "response": {"status_code": 200, "body": {}}}\n\xff\xfe{}\n')
    with pytest.raises(InputError, match=r"out\.jsonl:2: not UTF-8 text"):  # a BOM on line 1 is fine
        list(read_batch_output(broken))


def test_the_test_server_produces_the_faults_it_claims():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with OpenAIServer(per_request_faults=[Fault.too_many(0.5), Fault("503"), Fault.malformed(), Fault.drop(),
                                          Fault.hangup()]) as srv, httpx.Client() as http:
        url = srv.base_url + "/chat/completions"
        r = http.post(url, json=body)
        assert r.status_code == 429 and r.headers["retry-after"] == "0.5"
        assert http.post(url, json=body).status_code == 503
        r = http.post(url, json=body)
        assert r.status_code == 200 and pytest.raises(ValueError, r.json)
        with pytest.raises(httpx.RemoteProtocolError, match="complete message body"):
            http.post(url, json=body)
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            http.post(url, json=body)
        r = http.post(url, json=body)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith("reply-")
        assert r.json()["usage"]["prompt_tokens"] == 1
        srv.inject(Fault.slow(1.0))
        with pytest.raises(httpx.ReadTimeout):
            http.post(srv.base_url + "/completions", json={"model": "m", "prompt": "p"}, timeout=0.2)
        assert [q.outcome for q in srv.requests] == ["429", "503", "malformed", "drop", "hangup", "ok", "slow"]
        assert [q.attempt for q in srv.requests][:6] == [1, 2, 3, 4, 5, 6]
        assert http.post(srv.base_url + "/nothing", json=body).status_code == 404
        assert http.get(srv.base_url + "/models").json()["data"][0]["id"] == "test-model"


def test_the_test_server_produces_the_hostile_replies_it_claims():
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    long = {"model": "m", "messages": [{"role": "user", "content": "long"}], "max_tokens": 5}
    faults = [Fault.trickle(0.004), Fault.undecodable(), Fault.no_usage(), Fault.cut(), Fault.wrong_usage(),
              Fault.error(418, "teapot quoting sk-123"), Fault.too_many("inf"), Fault.shape(lambda p: b"[1, 2")]
    with OpenAIServer(responder=lambda r: "a fairly long reply text" if r.last_user_message == "long" else "ok"
                      ) as srv, httpx.Client() as http:
        srv.inject(*faults)
        url = srv.base_url + "/chat/completions"
        t0 = __import__("time").monotonic()
        r = http.post(url, json=body, timeout=0.1)  # every byte within the read timeout...
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
        assert __import__("time").monotonic() - t0 > 0.3  # ... the whole reply well beyond it
        assert srv.requests[0].sent_bytes == srv.requests[0].body_bytes > 75
        with pytest.raises(httpx.DecodingError):
            http.post(url, json=body)
        assert "usage" not in http.post(url, json=body).json()
        r = http.post(url, json=long).json()
        assert r["choices"][0]["finish_reason"] == "length" and r["choices"][0]["message"]["content"] == "a fairly lon"
        assert http.post(url, json=body).json()["usage"]["prompt_tokens"] == [12]
        r = http.post(url, json=body)
        assert r.status_code == 418 and r.json()["error"]["message"] == "teapot quoting sk-123"
        r = http.post(url, json=body)
        assert r.status_code == 429 and r.headers["retry-after"] == "inf"
        assert http.post(url, json=body).text == "[1, 2"
        srv.clear_faults()
        r = http.post(url, json=long).json()  # longer than max_tokens: cut there, as a real server does
        assert r["choices"][0]["finish_reason"] == "length" and len(r["choices"][0]["message"]["content"]) == 20
        assert http.post(url, json=body).json()["choices"][0]["finish_reason"] == "stop"
        assert [q.outcome for q in srv.requests] == ["trickle", "undecodable", "no_usage", "cut", "shape", "error",
                                                      "429", "shape", "ok", "ok"]
