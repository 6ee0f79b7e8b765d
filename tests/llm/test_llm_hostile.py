"""The client against endpoints that are hostile or broken in ways the fault
server's first faults did not cover: bodies that never end, JSON built to hurt
a parser, redirects to another host, a wrong key or model, an endpoint that
goes dead mid-run, proxies in the environment; and a cache that is damaged,
read-only or on a full disk."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from helpers.openai_server import Fault, OpenAIServer, openai_server_factory  # noqa: F401 (fixture)
from phi1.errors import Phi1Error
from phi1.llm import ChatRequest, LLMConfig, ResponseCache, run_chat
from helpers.llm_cases import KEY, chats, llm_cfg

class RawServer:
    """A socket server on 127.0.0.1 that answers every request with ``handler(conn)``:
    for replies no well-behaved HTTP server would send."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sent = 0  # body bytes written, across connections
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                got = conn.recv(65536)
                if not got:
                    return
                data += got
            try:
                self.handler(conn, self)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server():
    servers = []

    def make(handler) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


# --------------------------------------------------------------------------- bodies that never end


def _endless_content_length(conn, srv):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8000000000\r\n\r\n")
    while True:
        conn.sendall(b" " * 65536)
        srv.sent += 65536


def _endless_chunked(conn, srv):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        conn.sendall(b"10000\r\n" + b" " * 65536 + b"\r\n")
        srv.sent += 65536


_BOMB = gzip.compress(b" " * (64 << 20), compresslevel=9)  # 64 MiB of JSON whitespace in ~64 KiB


def _gzip_bomb(conn, srv):
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(_BOMB) + _BOMB)
    srv.sent += len(_BOMB)


@pytest.mark.parametrize("handler", [_endless_content_length, _endless_chunked, _gzip_bomb],
                         ids=["8GB-content-length", "endless-chunked", "gzip-bomb"])
def test_a_body_that_never_ends_is_abandoned_at_the_size_cap_not_buffered(raw_server, handler):
    srv = raw_server(handler)
    t = time.monotonic()
    results, usage = run_chat(llm_cfg(srv.base_url, max_reply_mb=1, max_retries=1, timeout_s=20), None, chats(1),
                              progress=False)
    took = time.monotonic() - t
    r = results[0]
    # Without the cap the client reads until the 20 s deadline, holding everything it read.
    assert not r.ok and "larger than 1 MiB (llm.max_reply_mb" in r.error, r.error
    assert usage["failures"] == {"too_large": 2} and took < 10
    assert srv.sent < 64 << 20  # the client hung up early (an endless body is not read to the deadline)


# --------------------------------------------------------------------------- JSON built to hurt


def _bytes(payload: bytes):
    return Fault.shape(lambda _: payload)


def _with_usage(value: str):
    return Fault.shape(lambda p: json.dumps({**p, "usage": None}).replace(
        '"usage": null', '"usage": {"prompt_tokens": %s, "completion_tokens": 3}' % value).encode())


HOSTILE = {
    "nested-100k": _bytes(b"[" * 100_000 + b"]" * 100_000),
    "nested-object": _bytes(b'{"choices": ' + b'{"a": ' * 50_000 + b"1" + b"}" * 50_001),
    "int-with-5000-digits": _with_usage("9" * 5000),
    "usage-NaN": _with_usage("NaN"),
    "usage-Infinity": _with_usage("Infinity"),
    "usage-negative": _with_usage("-300000"),
    "usage-absurd": _with_usage(str(10**12)),
    "usage-1e300": _with_usage("1e300"),
    "choices-empty": Fault.shape(lambda p: {**p, "choices": []}),
    "choices-null": Fault.shape(lambda p: {**p, "choices": None}),
    "error-inside-200": Fault.shape(lambda p: {"error": {"message": "upstream overloaded", "code": 503}}),
    "not-utf8": _bytes(b'{"choices":[{"index":0,"message":{"content":"caf\xe9 \xff"},"finish_reason":"stop"}]}'),
    "empty-body": _bytes(b""),
    "html": _bytes(b"<html><body>502 Bad Gateway</body></html>"),
}


@pytest.mark.timeout(60)
def test_json_built_to_hurt_is_a_malformed_reply_retried_never_a_crash_or_a_bill(openai_server_factory):
    names = list(HOSTILE)
    srv = openai_server_factory(responder=lambda r: "fine", rules=[
        (lambda r, i=i: r.attempt == 1 and r.last_user_message == f"q {i}", HOSTILE[name])
        for i, name in enumerate(names)])
    results, usage = run_chat(llm_cfg(srv.base_url, concurrency=4, price_per_1m_input=1.0, price_per_1m_output=1.0),
                              None, chats(len(names)), progress=False)
    assert all(r.ok and r.text == "fine" and r.attempts == 2 for r in results), \
        [(n, r.error) for n, r in zip(names, results) if not r.ok]
    assert usage["failures"] == {"malformed": len(names)}
    # What was billed is what the server reported for the good replies: never negative, never absurd.
    assert usage["prompt_tokens"] == srv.usage_total()["prompt_tokens"] and 0 < usage["cost_usd"] < 0.01


def test_an_error_object_inside_a_200_is_shown_and_retried(openai_server_factory):
    srv = openai_server_factory(rules=[(lambda r: True, HOSTILE["error-inside-200"])])
    results, _ = run_chat(llm_cfg(srv.base_url, max_retries=1), None, chats(1), progress=False)
    assert results[0].error.endswith("(an error object: upstream overloaded)") and len(srv.requests) == 2


@pytest.mark.parametrize("content, text", [
    (None, ""),  # content null
    ([{"type": "text", "text": "Score: "}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "2"}],
     "Score: 2"),  # content parts: the text ones
    ("x\ud800y", "x\ud800y"),  # a lone surrogate: kept as sent, cached escaped
])
def test_odd_but_valid_replies_are_read_as_text(openai_server_factory, tmp_path, content, text):
    def shape(p):
        p["choices"][0]["message"]["content"] = content
        if content is None:
            p["choices"][0]["message"]["tool_calls"] = [{"id": "1", "type": "function",
                                                         "function": {"name": "f", "arguments": "{}"}}]
            p["choices"][0]["finish_reason"] = "tool_calls"
        return p

    srv = openai_server_factory(rules=[(lambda r: True, Fault.shape(shape))])
    for _ in range(2):  # live, then from the cache
        results, _ = run_chat(llm_cfg(srv.base_url), tmp_path / "c.sqlite", chats(1), progress=False)
        assert results[0].ok and results[0].text == text
    assert len(srv.requests) == 1


def test_duplicate_keys_take_the_last_as_json_does(openai_server_factory):
    body = (b'{"choices":[{"index":0,"message":{"content":"first"},"finish_reason":"stop"}],'
            b'"choices":[{"index":0,"message":{"content":"last"},"finish_reason":"stop"}]}')
    srv = openai_server_factory(rules=[(lambda r: True, _bytes(body))])
    results, _ = run_chat(llm_cfg(srv.base_url), None, chats(1), progress=False)
    assert results[0].text == "last"


# --------------------------------------------------------------------------- redirects, keys, models


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_not_followed_and_the_key_never_reaches_the_other_host(openai_server_factory, monkeypatch,
                                                                             status):
    monkeypatch.setenv("PHI1_TEST_KEY", KEY)
    elsewhere = openai_server_factory()  # another origin (another port is another origin)
    # The Location quotes the key (a server echoing it into a URL): it is redacted like any error text.
    srv = openai_server_factory(rules=[(lambda r: True, Fault.redirect(
        elsewhere.base_url + f"/chat/completions?api_key={KEY}", status))])
    results, usage = run_chat(llm_cfg(srv.base_url, api_key_env="PHI1_TEST_KEY"), None, chats(3), progress=False)
    assert elsewhere.requests == []
    assert all(not r.ok and r.attempts == 1 and f"HTTP {status}" in r.error and "not followed" in r.error
               and elsewhere.base_url in r.error for r in results)
    assert KEY not in json.dumps([r.error for r in results]) + json.dumps(usage)


def test_a_reply_that_quotes_the_key_is_masked_before_it_is_stored(openai_server_factory, tmp_path, monkeypatch):
    """A hostile endpoint echoes the Authorization header into its answer: the key must not
    reach the cache, the results (and from there labels.jsonl, which people publish)."""
    monkeypatch.setenv("PHI1_TEST_KEY", KEY)
    srv = openai_server_factory(responder=lambda r: f"Your header was {r.headers['authorization']}.\nScore: 3")
    notices: list[str] = []
    path = tmp_path / "c.sqlite"
    for _ in range(2):  # live, then from the cache
        results, _ = run_chat(llm_cfg(srv.base_url, api_key_env="PHI1_TEST_KEY"), path, chats(3), progress=False,
                              log=notices.append)
        assert all(r.ok and r.text == "Your header was Bearer ***.\nScore: 3" for r in results)
    assert len(srv.requests) == 3 and len(notices) == 1 and "quoted the API key" in notices[0]
    assert not any(KEY.encode() in p.read_bytes() for p in tmp_path.iterdir())
    # A placeholder key (vLLM's "EMPTY") is not a secret to mask out of the data.
    monkeypatch.setenv("PHI1_TEST_KEY", "EMPTY")
    srv = openai_server_factory(responder=lambda r: "EMPTY = object()  # a sentinel\nScore: 3")
    results, _ = run_chat(llm_cfg(srv.base_url, api_key_env="PHI1_TEST_KEY"), None, chats(1), progress=False)
    assert results[0].text.startswith("EMPTY = object()")


@pytest.mark.parametrize("fault", [Fault("401"), Fault.error(403, "Project does not have access"),
                                   Fault.error(404, "The model `test-model` does not exist"),
                                   Fault.error(429, "You exceeded your current quota", "insufficient_quota")],
                         ids=["401", "403", "404-model", "429-no-quota-left"])
def test_a_wrong_key_or_model_stops_the_run_after_a_few_requests(openai_server_factory, fault):
    srv = openai_server_factory(rules=[(lambda r: True, fault)])
    notices: list[str] = []
    cfg = llm_cfg(srv.base_url, concurrency=4)
    from phi1.llm import LLMClient
    import asyncio

    with LLMClient(cfg, None, log=notices.append) as client:
        results = asyncio.run(client.chat_many(chats(200), progress=False))
        usage = client.usage
    assert all(not r.ok and r.attempts <= 1 for r in results)
    assert len(srv.requests) <= 3 + 4  # three refusals in a row break it; at most `concurrency` were in flight
    assert usage["not_sent"] >= 200 - 7 and usage["errors"] == 200
    not_sent = [r for r in results if r.error.startswith("not sent: ")]
    assert len(not_sent) == usage["not_sent"] and f"HTTP {fault.status or 401}" in not_sent[0].error
    assert len(notices) == 1 and "nothing more is sent to" in notices[0]


def test_a_refusing_endpoint_among_good_ones_is_set_aside_and_its_requests_go_elsewhere(openai_server_factory):
    bad = openai_server_factory(rules=[(lambda r: True, Fault("401"))])
    good = openai_server_factory()
    results, usage = run_chat(llm_cfg(bad.base_url, good.base_url, concurrency=4, load_balance="round_robin"), None,
                              chats(60), progress=False)
    assert all(r.ok for r in results)
    assert len(bad.requests) <= 3 + 4 and usage["endpoints"][0]["broken"].startswith("HTTP 401")


def test_one_prompt_refused_with_403_does_not_stop_the_others(openai_server_factory):
    """A firewall in front of an endpoint may refuse one prompt: that is not a broken setup."""
    srv = openai_server_factory(rules=[(lambda r: r.last_user_message == "q 3", Fault.error(403, "blocked"))])
    results, usage = run_chat(llm_cfg(srv.base_url, concurrency=2), None, chats(30), progress=False)
    assert [i for i, r in enumerate(results) if not r.ok] == [3] and "not_sent" not in usage


# --------------------------------------------------------------------------- an endpoint that goes dead


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dead", ["hangs", "hangs-up", "refuses"])
def test_an_endpoint_that_goes_dead_ends_the_run_within_the_stated_bound(openai_server_factory, dead):
    """After the last reply, every request ends within give_up_after_s + timeout_s (plus a
    moment), with the unanswered ones failed: here at most 1 + 0.5 s, where max_retries = 1000
    would otherwise keep the run going for hours."""
    answered = 5
    gone = threading.Event()
    if dead == "refuses":  # answers for a moment, then the process is gone: connection refused
        srv = openai_server_factory(responder=lambda r: time.sleep(0.02) or "fine",
                                    rules=[(lambda r: gone.is_set(), Fault.hangup())])  # closes kept-alive ones

        def die():
            gone.set()
            srv.stop()

        threading.Timer(0.3, die).start()
    else:
        srv = openai_server_factory(rules=[(lambda r: r.seq >= answered,
                                            Fault.slow(30) if dead == "hangs" else Fault.hangup())])
    cfg = llm_cfg(srv.base_url, concurrency=4, max_retries=1000, timeout_s=0.5, give_up_after_s=1.0,
               backoff_base_s=0.05, backoff_max_s=0.2)
    notices: list[str] = []
    from phi1.llm import LLMClient
    import asyncio

    t = time.monotonic()
    with LLMClient(cfg, None, log=notices.append) as client:
        results = asyncio.run(client.chat_many(chats(400), progress=False))
        usage = client.usage
    took = time.monotonic() - t
    ok = [r for r in results if r.ok]
    assert ok and len(ok) < 400
    assert all(r.error for r in results if not r.ok)
    assert usage["not_sent"] > 0 and any(n.startswith("giving up: no endpoint has answered for 1s") for n in notices)
    bound = 0.3 + 1.0 + 0.5 + 1.5  # time of the last reply (at most), give_up_after_s, timeout_s, slack
    assert took < bound, took


# --------------------------------------------------------------------------- proxies in the environment


def test_loopback_endpoints_never_go_through_an_environment_proxy(openai_server_factory, monkeypatch):
    srv = openai_server_factory()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    results, _ = run_chat(llm_cfg(srv.base_url), None, chats(2), progress=False)
    assert all(r.ok for r in results)
    monkeypatch.setenv("ALL_PROXY", "garbage://user:hunter22@proxy:1")  # unusable, but never needed here
    results, _ = run_chat(llm_cfg(srv.base_url.replace("127.0.0.1", "localhost")), None, chats(2, "l"),
                          progress=False)
    assert all(r.ok for r in results)


def test_an_unusable_proxy_setting_is_one_line_without_its_password(monkeypatch):
    monkeypatch.setenv("ALL_PROXY", "garbage://user:hunter22@proxy.example:1")
    with pytest.raises(Phi1Error) as e:
        run_chat(llm_cfg("http://api.example.invalid/v1"), None, chats(1), progress=False)
    msg = str(e.value)
    assert "ALL_PROXY=garbage://proxy.example:1" in msg and "hunter22" not in msg and "\n" not in msg


# --------------------------------------------------------------------------- Retry-After dates


@pytest.mark.parametrize("when", ["Mon, 01 Jan 2001 00:00:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_a_retry_after_date_in_the_past_means_now(openai_server_factory, when):
    notices: list[str] = []
    srv = openai_server_factory(per_request_faults=[Fault.too_many(when)])
    t = time.monotonic()
    results, _ = run_chat(llm_cfg(srv.base_url), None, chats(2), progress=False, log=notices.append)
    assert all(r.ok for r in results) and time.monotonic() - t < 2 and notices == []


def test_a_retry_after_date_in_the_future_is_capped(openai_server_factory):
    from email.utils import formatdate

    notices: list[str] = []
    srv = openai_server_factory(per_request_faults=[Fault.too_many(formatdate(time.time() + 3600, usegmt=True))])
    t = time.monotonic()
    results, _ = run_chat(llm_cfg(srv.base_url, retry_after_max_s=1.0), None, chats(1), progress=False,
                          log=notices.append)
    assert results[0].ok and 0.9 < time.monotonic() - t < 3
    assert len(notices) == 1 and "holding its requests for 1.0s" in notices[0]


# --------------------------------------------------------------------------- the cache


def _filled_cache(srv, path: Path, n: int = 40) -> None:
    results, _ = run_chat(llm_cfg(srv.base_url), path, chats(n), progress=False)
    assert all(r.ok for r in results)


def test_a_damaged_cache_stops_before_sending_and_says_how_to_keep_its_replies(openai_server_factory, tmp_path):
    srv = openai_server_factory()
    path = tmp_path / "llm.sqlite"
    _filled_cache(srv, path, 200)
    ResponseCache(path).close()  # checkpoints the WAL into the file
    srv.reset_log()
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(Phi1Error) as e:
        run_chat(llm_cfg(srv.base_url), path, chats(200), progress=False)
    msg = str(e.value)
    assert str(path) in msg and "damaged; nothing was sent" in msg and ".recover" in msg and "\n" not in msg
    assert srv.requests == [] and path.stat().st_size == size // 2  # never replaced, never emptied
    path.write_bytes(b"this is not a database " * 100)
    with pytest.raises(Phi1Error, match="cannot be opened .file is not a database.: it is damaged"):
        run_chat(llm_cfg(srv.base_url), path, chats(1), progress=False)


def test_unreadable_rows_are_said_and_asked_again_the_rest_is_kept(openai_server_factory, tmp_path):
    import sqlite3

    srv = openai_server_factory()
    path = tmp_path / "llm.sqlite"
    _filled_cache(srv, path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE responses SET response = '{broken' WHERE rowid = 3")
        db.execute("UPDATE responses SET response = '[1, 2]' WHERE rowid = 4")
        db.execute("UPDATE responses SET response = CAST(X'FFFE00' AS TEXT) WHERE rowid = 5")
    srv.reset_log()
    notices: list[str] = []
    results, usage = run_chat(llm_cfg(srv.base_url), path, chats(40), progress=False, log=notices.append)
    assert all(r.ok for r in results) and len(srv.requests) == 3 and usage["cache_hits"] == 37
    assert notices == [f"3 replies stored in {path} cannot be read back (damaged rows): asking those requests again"]
    srv.reset_log()
    run_chat(llm_cfg(srv.base_url), path, chats(40), progress=False)  # repaired by the re-asks
    assert srv.requests == []


_FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    sys.path.insert(0, {tests!r})
    from phi1.cli import main
    from phi1.errors import Phi1Error
    from phi1.llm import ChatRequest, LLMConfig, run_chat
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    cfg = LLMConfig(base_urls=[{url!r}], model="m", api_key_env="", timeout_s=5)
    reqs = [ChatRequest([{{"role": "user", "content": f"q {{i}} " + "x" * 2000}}]) for i in range(200)]
    try:
        run_chat(cfg, {path!r}, reqs, progress=False)
    except Phi1Error as e:
        print(f"error: {{e}}", file=sys.stderr)
        sys.exit(1)
""")


@pytest.mark.timeout(60)
def test_a_full_disk_stops_the_run_with_one_line_and_keeps_what_was_cached(openai_server_factory, tmp_path):
    srv = openai_server_factory()
    path = tmp_path / "llm.sqlite"
    script = _FULL_DISK.format(tests=str(Path(__file__).parents[1]), limit=160 * 1024, url=srv.base_url,
                               path=str(path))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert p.returncode == 1, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert f"LLM response cache {path} cannot be written (" in lines[0] and "nothing already cached is sent again" \
        in lines[0]
    with ResponseCache(path) as cache:
        kept = len(cache)
    assert 0 < kept < 200
    srv.reset_log()  # room again: the re-run sends only what is not cached
    reqs = [ChatRequest([{"role": "user", "content": f"q {i} " + "x" * 2000}]) for i in range(200)]
    results, usage = run_chat(LLMConfig(base_urls=[srv.base_url], model="m", api_key_env=""), path, reqs,
                              progress=False)
    assert all(r.ok for r in results) and usage["cache_hits"] == kept and len(srv.requests) == 200 - kept


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only files")
def test_a_read_only_cache_serves_what_it_holds_and_stops_in_one_line_to_write(openai_server_factory, tmp_path):
    srv = openai_server_factory()
    path = tmp_path / "llm.sqlite"
    _filled_cache(srv, path, 5)
    ResponseCache(path).close()
    path.chmod(0o444)
    try:
        results, _ = run_chat(llm_cfg(srv.base_url), path, chats(5), progress=False)
        assert all(r.ok and r.cached for r in results)
        with pytest.raises(Phi1Error, match="cannot be written .attempt to write a readonly database."):
            run_chat(llm_cfg(srv.base_url), path, chats(6), progress=False)
    finally:
        path.chmod(0o644)


def test_two_runs_on_one_cache_at_once_both_finish_and_the_cache_stays_whole(openai_server_factory, tmp_path):
    srv = openai_server_factory(latency=0.01)
    path = tmp_path / "llm.sqlite"
    out: dict[int, list] = {}

    def run(i: int) -> None:
        out[i] = run_chat(llm_cfg(srv.base_url, concurrency=8), path, chats(80), progress=False)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert all(r.ok for i in range(2) for r in out[i])
    assert [r.text for r in out[0]] == [r.text for r in out[1]]
    with ResponseCache(path) as cache:
        assert len(cache) == 80
    srv.reset_log()
    run_chat(llm_cfg(srv.base_url), path, chats(80), progress=False)
    assert srv.requests == []


# --------------------------------------------------------------------------- many workers, few connections


@pytest.mark.timeout(120)
def test_concurrency_500_against_a_server_that_takes_10_at_a_time(openai_server_factory):
    """A server that refuses (429) what it cannot take: the window settles near its capacity."""
    srv = openai_server_factory(max_in_flight=10, latency=0.02, retry_after=0.05)
    results, usage = run_chat(llm_cfg(srv.base_url, concurrency=500, backoff_base_s=0.05, backoff_max_s=1.0,
                                   timeout_s=60), None, chats(300), progress=False)
    assert all(r.ok for r in results) and set(srv.ok_counts().values()) == {1}
    assert usage["failures"].keys() <= {"429"} and usage["failures"].get("429", 0) < 60  # was about 1 in 3


def _queueing_server(raw_server, workers: int, seconds: float):
    """A server that takes every connection but works on `workers` requests at a time, the rest
    queued (as vLLM with max_num_seqs does); it finishes a request even if the client has gone."""
    import queue

    served: dict[str, int] = {}
    work: queue.Queue = queue.Queue()

    def serve(conn, srv):
        while True:
            done = threading.Event()
            work.put((conn, done))
            done.wait()
            data = b""
            while b"\r\n\r\n" not in data:  # the next request on this kept-alive connection
                got = conn.recv(65536)
                if not got:
                    return
                data += got

    def worker():
        while True:
            conn, done = work.get()
            time.sleep(seconds)
            body = json.dumps({"choices": [{"index": 0, "message": {"content": "fine"}, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                             % len(body) + body)
            except OSError:
                pass
            served[threading.current_thread().name] = served.get(threading.current_thread().name, 0) + 1
            done.set()

    for i in range(workers):
        threading.Thread(target=worker, name=f"w{i}", daemon=True).start()
    srv = raw_server(lambda conn, srv: serve(conn, srv))
    return srv, served


@pytest.mark.timeout(60)
def test_concurrency_500_against_a_server_that_queues_does_not_pay_twice_for_timeouts(raw_server):
    """A server that queues what it cannot take: a burst of 300 would wait there past the deadline,
    time out, be sent again and be worked on (paid) twice; the window grows only as replies come."""
    srv, served = _queueing_server(raw_server, workers=10, seconds=0.05)
    results, usage = run_chat(llm_cfg(srv.base_url, concurrency=500, timeout_s=1.0, backoff_base_s=0.05,
                                   backoff_max_s=0.5), None, chats(300), progress=False)
    assert all(r.ok for r in results)
    worked = sum(served.values())
    assert usage["failures"].get("timeout", 0) < 100 and worked < 345, (usage["failures"], worked)  # was ~600, ~500
