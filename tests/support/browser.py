"""Headless Chromium driven over the DevTools protocol (CDP), for tests that open a page as a user would.

Chromium is started with `--remote-debugging-pipe`: CDP messages are NUL-terminated JSON on the child's fd 3
(commands in) and fd 4 (replies and events out), so no port, no websocket client and no extra package is needed.
Every page session records console errors, uncaught exceptions, log-domain errors and the URL of every request, so
a test can assert "no console errors" and "no network".

    with Browser.launch() as browser:          # pytest.skip()s when no chromium binary exists
        page = browser.open(Path("report.html").as_uri())
        page.evaluate("document.title")
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--force-device-scale-factor=1",
         "--remote-debugging-pipe")
TIMEOUT_S = 60.0


def find_chromium() -> str | None:
    override = os.environ.get("REME_CHROMIUM")
    if override:
        return override if Path(override).exists() else None
    return next((path for path in map(shutil.which, BINARIES) if path), None)


class BrowserError(RuntimeError):
    pass


def _move_high(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One Chromium process with a fresh profile; talk to it with `call` or through `open()`'s Page."""

    def __init__(self, binary: str):
        self.profile = tempfile.mkdtemp(prefix="reme-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # The child's ends, moved to fds >= 10 so dup2 onto 3 and 4 below can neither be a no-op (which would leave
        # close-on-exec set) nor overwrite the other end.
        to_child_r, from_child_w = (_move_high(fd) for fd in (to_child_r, from_child_w))

        def wire_pipes():  # in the child, before exec: its fd 3 reads our commands, its fd 4 writes replies
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        # Our own descriptors are close-on-exec (PEP 446); fds 3 and 4, made by dup2, are the ones passed on.
        self.process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=wire_pipes, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._next_id = 0
        self._replies: dict[int, queue.Queue] = {}
        self._events: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read_replies, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.process.stderr), daemon=True).start()

    @classmethod
    def launch(cls) -> Browser:
        """A started browser, or pytest.skip when this machine has no chromium binary."""
        binary = find_chromium()
        if binary is None:
            pytest.skip("no chromium binary (apt-get install chromium; .ci/run installs it, REME_CHROMIUM overrides)")
        return cls(binary)

    def _read_replies(self) -> None:
        buffer = b""
        with os.fdopen(self._from_child, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message and message["id"] in self._replies:
                        self._replies[message["id"]].put(message)
                    else:
                        self._events.put(message)
        for waiting in list(self._replies.values()):  # the browser went away: wake every caller
            waiting.put({"error": {"message": "browser closed the DevTools pipe"}})

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = TIMEOUT_S) -> dict:
        with self._lock:
            self._next_id += 1
            call_id = self._next_id
            self._replies[call_id] = queue.Queue()
        message = {"id": call_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode("utf-8") + b"\0")
        try:
            reply = self._replies[call_id].get(timeout=timeout)
        except queue.Empty:
            raise BrowserError(f"{method}: no reply in {timeout:.0f}s; chromium stderr:\n{self.stderr()}") from None
        finally:
            self._replies.pop(call_id, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def next_event(self, timeout: float) -> dict:
        return self._events.get(timeout=timeout)

    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")[-4000:]

    def open(self, url: str, width: int = 1280, height: int = 800) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        page.wait_for("Page.loadEventFired")
        return page

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                try:
                    self.call("Browser.close", timeout=10)
                except BrowserError:
                    pass
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            os.close(self._to_child)
            shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """One tab: evaluate script, type, screenshot; records errors and requested URLs as events arrive."""

    def __init__(self, browser: Browser, session: str):
        self.browser, self.session = browser, session
        self.errors: list[str] = []
        self.requests: list[str] = []

    def _record(self, event: dict) -> None:
        if event.get("sessionId") != self.session:
            return
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                     for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                                    or details.get("text")))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Page.javascriptDialogOpening":
            self.errors.append(f"dialog: {params.get('type')} {params.get('message')!r}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))

    def drain(self) -> None:
        """Record every event received so far."""
        while True:
            try:
                self._record(self.browser.next_event(timeout=0))
            except queue.Empty:
                return

    def wait_for(self, method: str, timeout: float = TIMEOUT_S) -> dict:
        while True:
            try:
                event = self.browser.next_event(timeout=timeout)
            except queue.Empty:
                raise BrowserError(f"no {method} in {timeout:.0f}s; chromium stderr:\n{self.browser.stderr()}") from None
            self._record(event)
            if event.get("method") == method and event.get("sessionId") == self.session:
                return event.get("params", {})

    def call(self, method: str, params: dict | None = None) -> dict:
        result = self.browser.call(method, params, session=self.session)
        self.drain()
        return result

    def evaluate(self, expression: str):
        """The JSON value of a script expression (promises awaited); a thrown error raises BrowserError."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('exception', {}).get('description')}")
        return result.get("result", {}).get("value")

    def type_text(self, selector: str, text: str) -> None:
        """Focus the element and type into it as a keyboard would (input events fire)."""
        self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        self.call("Input.insertText", {"text": text})

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path
