"""Open a report in headless Chromium and look at it as a reader would.

Chromium runs with a fresh profile, no network features and no sandbox
(root in containers), and is driven over the Chrome DevTools Protocol on its
``--remote-debugging-port`` websocket, with a small stdlib websocket client
(no playwright, no browser download). `check_report` loads the page, waits
for it, decodes every image and returns what a test asserts on: console
errors, network requests, the sections present, each image's natural size,
and a screenshot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from phi1.errors import Phi1Error

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


# --------------------------------------------------------------------------- websocket (RFC 6455, client side)


class WebSocket:
    """A blocking websocket client: text frames out (masked), text frames in."""

    _GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

    def __init__(self, url: str, timeout: float):
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = bytes(self.buf).partition(b"\r\n\r\n")
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        if " 101 " not in lines[0] + " ":
            raise Phi1Error(f"websocket handshake with {url} failed: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1((key + self._GUID).encode()).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if headers.get("sec-websocket-accept") != accept:
            raise Phi1Error(f"websocket handshake with {url}: wrong Sec-WebSocket-Accept")

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise Phi1Error("the browser closed the DevTools connection")
        self.buf.extend(chunk)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        """The next text message (fragments joined; pings answered)."""
        parts: list[bytes] = []
        while True:
            b0, b1 = self._take(2)
            opcode, fin = b0 & 0x0F, b0 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8))[0]
            mask = self._take(4) if b1 & 0x80 else b""
            data = self._take(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if opcode == 0x8:
                raise Phi1Error("the browser closed the DevTools connection")
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            if opcode in (0x1, 0x0, 0x2):
                parts.append(data)
                if fin:
                    return b"".join(parts).decode("utf-8")

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        except OSError:
            pass
        self.sock.close()


# --------------------------------------------------------------------------- the browser


@dataclass
class PageCheck:
    """What headless Chromium saw of a page."""

    url: str
    title: str = ""
    sections: list[str] = field(default_factory=list)  # data-section of each <section>, in order
    images: list[dict[str, Any]] = field(default_factory=list)  # alt, width, height (natural), error
    console_errors: list[str] = field(default_factory=list)  # console.error, uncaught exceptions, log errors
    requests: list[str] = field(default_factory=list)  # every URL fetched other than the page and data: URIs
    screenshot: bytes = b""


class HeadlessChromium:
    """``with HeadlessChromium() as b: b.open(path); b.evaluate(js); b.screenshot()``."""

    def __init__(self, width: int = 1280, height: int = 1600, timeout: float = 120.0,
                 binary: str | None = None):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise Phi1Error("no Chromium found (install Debian's `chromium`: `apt-get install chromium`, "
                            "or run `make setup` as root)")
        self.width, self.height, self.timeout = width, height, timeout
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        self._events: list[dict[str, Any]] = []
        self._id = 0
        self._profile = tempfile.TemporaryDirectory(prefix="phi1-chromium-")
        self._log = open(Path(self._profile.name) / "chromium.log", "wb")
        self.proc: subprocess.Popen | None = None
        self.ws: WebSocket | None = None

    def __enter__(self) -> "HeadlessChromium":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _start(self) -> None:
        profile = Path(self._profile.name) / "profile"
        args = [self.binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
                f"--window-size={self.width},{self.height}", "about:blank"]
        # Its own session: Chromium forks helpers (zygote, crashpad, renderers) that must end with it.
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None:
                raise Phi1Error(f"{self.binary} exited with status {self.proc.returncode} before DevTools "
                                f"started: {self._log_tail()}")
            if time.monotonic() > deadline:
                raise Phi1Error(f"{self.binary} did not open DevTools within {self.timeout:.0f}s: {self._log_tail()}")
            time.sleep(0.1)
        port = int(port_file.read_text().split("\n")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout) as r:
            targets = json.loads(r.read())
        pages = [t for t in targets if t.get("type") == "page" and t.get("webSocketDebuggerUrl")]
        if not pages:
            raise Phi1Error(f"{self.binary} has no page to drive (targets: {targets})")
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"], timeout=self.timeout)
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            self.call(method)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})

    def _log_tail(self) -> str:
        self._log.flush()
        text = (Path(self._profile.name) / "chromium.log").read_text(errors="replace").strip()
        return text[-600:] or "(no output)"

    # -- protocol --------------------------------------------------------------
    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.ws is not None
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise Phi1Error(f"DevTools {method} failed: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)
        raise Phi1Error(f"DevTools {method}: no answer within {self.timeout:.0f}s")

    def _event(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method", ""), msg.get("params", {})
        self._events.append(msg)
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            self.console_errors.append(f"console.{p.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.console_errors.append(f"uncaught: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            self.console_errors.append(f"log ({e.get('source')}): {e.get('text')} {e.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(p.get("request", {}).get("url", ""))

    def _wait_event(self, name: str) -> None:
        assert self.ws is not None
        if any(e.get("method") == name for e in self._events):
            return
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            self._event(msg)
            if msg.get("method") == name:
                return
        raise Phi1Error(f"the page did not fire {name} within {self.timeout:.0f}s")

    # -- what a test uses ------------------------------------------------------
    def open(self, path: str | Path) -> str:
        url = Path(path).resolve().as_uri()
        self._events.clear()
        self.call("Page.navigate", {"url": url})
        self._wait_event("Page.loadEventFired")
        return url

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise Phi1Error(f"JavaScript failed: {d.get('exception', {}).get('description') or d.get('text')}")
        return r.get("result", {}).get("value")

    def screenshot(self, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1})
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            self.ws = None
        if self.proc is not None:
            _end_process_group(self.proc)
        self._log.close()
        _remove_tree(Path(self._profile.name))
        self._profile.cleanup()


def _end_process_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the browser and every helper it forked (they share its process group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(proc.pid):
                return
            time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _remove_tree(path: Path, attempts: int = 20) -> None:
    """Remove the profile; a helper still flushing can refill a folder between rmtree's listing and rmdir."""
    for _ in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)
    shutil.rmtree(path, ignore_errors=True)


_INSPECT = """
(async () => {
  const images = [];
  for (const im of Array.from(document.images)) {
    let error = "";
    try { await im.decode(); } catch (e) { error = String(e); }
    images.push({alt: im.alt, width: im.naturalWidth, height: im.naturalHeight, error: error});
  }
  const sections = Array.from(document.querySelectorAll("section[data-section]")).map(s => s.dataset.section);
  return {title: document.title, sections: sections, images: images};
})()
"""


def check_report(path: str | Path, screenshot_full_page: bool = False, **browser: Any) -> PageCheck:
    """Load a report in headless Chromium: console errors, requests, sections, image sizes, a screenshot."""
    with HeadlessChromium(**browser) as b:
        url = b.open(path)
        seen = b.evaluate(_INSPECT)
        shot = b.screenshot(full_page=screenshot_full_page)
        others = [u for u in b.requests if u != url and not u.startswith("data:")]
        return PageCheck(url=url, title=seen["title"], sections=seen["sections"], images=seen["images"],
                         console_errors=list(b.console_errors), requests=others, screenshot=shot)
