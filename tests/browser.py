"""Headless Chromium for browser tests: one-shot runs and a small CDP driver.

Why this exists: tests must use the real browser from Debian's packages, with the
flags known to work on this machine (docs: /work/shared/notes/chromium-webrtc.md),
a fresh profile per run, and no stray processes afterwards. Chromium is started in
its own process group and the whole group is killed at the end, because headless
Chromium never exits by itself and leaves helper processes behind.

Two ways to drive it:

- :func:`run_chromium` for pages that reach their final state by themselves: it dumps
  the DOM (``--dump-dom``) and/or takes a screenshot, then returns.
- :class:`Chromium` plus :class:`CdpPage` for pages that must stay open while events
  arrive: the DevTools protocol over a websocket (``websockets.sync``), with
  ``evaluate``, ``wait_for`` and ``screenshot``. It is synchronous; call it from a
  thread (``asyncio.to_thread``) when an asyncio loop must keep running meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

BASE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--mute-audio",
    "--no-proxy-server",
)

# Flags for pages that publish a camera/microphone (see the WebRTC notes).
FAKE_MEDIA_FLAGS = (
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
)


# Loopback only: ignore any proxy set in the environment.
_LOCAL_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BrowserError(RuntimeError):
    """Chromium did not start, or the page did not reach the expected state."""


def find_chromium() -> str | None:
    """Path of the Chromium binary: ``$DFMON_CHROMIUM``, Debian's paths, then ``$PATH``."""
    override = os.environ.get("DFMON_CHROMIUM")
    if override:
        return override if os.access(override, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    """The binary, or skip the calling test with a clear reason."""
    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium)")
    return path


def fake_media_flags(video: Path | None = None, audio: Path | None = None) -> list[str]:
    """Flags that make a y4m file the camera and a wav file the microphone."""
    flags = list(FAKE_MEDIA_FLAGS)
    if video is not None:
        flags.append(f"--use-file-for-fake-video-capture={Path(video).resolve()}")
    if audio is not None:
        flags.append(f"--use-file-for-fake-audio-capture={Path(audio).resolve()}")
    return flags


def _command(
    binary: str, profile: Path, window_size: tuple[int, int], extra: Sequence[str]
) -> list[str]:
    return [
        binary,
        *BASE_FLAGS,
        f"--user-data-dir={profile}",
        f"--window-size={window_size[0]},{window_size[1]}",
        *extra,
    ]


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    """Kill Chromium's whole process group (it was started as its leader)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=3)
    # Helpers may outlive the leader for a moment; the group id still reaches them.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_chromium(
    url: str,
    *,
    screenshot: Path | None = None,
    dump_dom: bool = True,
    virtual_time_budget_ms: int | None = None,
    window_size: tuple[int, int] = (1280, 900),
    extra_flags: Sequence[str] = (),
    timeout_s: float = 30.0,
) -> str:
    """Load ``url`` once; return the serialized DOM (``""`` when ``dump_dom`` is False).

    ``virtual_time_budget_ms`` lets timers run that long (in virtual time) before the
    DOM is dumped; it does not wait for real network events, so pages fed over a
    websocket need :class:`Chromium` instead.
    """
    binary = require_chromium()
    flags = list(extra_flags)
    if virtual_time_budget_ms is not None:
        flags.append(f"--virtual-time-budget={int(virtual_time_budget_ms)}")
    if screenshot is not None:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        flags.append(f"--screenshot={screenshot}")
    if dump_dom:
        flags.append("--dump-dom")
    with tempfile.TemporaryDirectory(prefix="dfmon-chromium-") as profile:
        cmd = _command(binary, Path(profile), window_size, flags) + [url]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise BrowserError(f"Chromium did not finish {url} within {timeout_s} s") from exc
        finally:
            _kill_group(proc)
    if proc.returncode != 0:
        raise BrowserError(f"Chromium exited {proc.returncode}: {err[-2000:]}")
    if screenshot is not None and not screenshot.exists():
        raise BrowserError(f"Chromium wrote no screenshot: {err[-2000:]}")
    return out


class CdpPage:
    """One page target, driven over the DevTools protocol (synchronous).

    Console messages and uncaught exceptions are collected in ``console`` and
    ``exceptions`` so a test can assert that the page ran without errors.
    """

    def __init__(self, ws_url: str, timeout_s: float = 10.0) -> None:
        from websockets.sync.client import connect

        # proxy=None: DevTools is on loopback; an HTTP(S)_PROXY from the CI must not apply.
        self._stack = contextlib.ExitStack()
        self._ws = self._stack.enter_context(
            connect(
                ws_url, max_size=64 * 2**20, open_timeout=timeout_s, proxy=None, ping_interval=None
            )
        )
        self._ids = itertools.count(1)
        self.timeout_s = timeout_s
        self.console: list[str] = []
        self.exceptions: list[str] = []
        self.send("Runtime.enable")
        self.send("Page.enable")

    def close(self) -> None:
        self._stack.close()

    def _note_event(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.consoleAPICalled":
            parts = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.console.append(f"{params.get('type')}: {' '.join(parts)}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            exception = details.get("exception", {})
            self.exceptions.append(str(exception.get("description") or details.get("text")))

    def send(self, method: str, timeout_s: float | None = None, **params: Any) -> dict[str, Any]:
        """Send one command; return its ``result``. Events seen meanwhile are noted."""
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"no answer to {method}")
            try:
                message = json.loads(self._ws.recv(timeout=remaining))
            except TimeoutError as exc:
                raise BrowserError(f"no answer to {method}") from exc
            if message.get("id") == message_id:
                if "error" in message:
                    raise BrowserError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            self._note_event(message)

    def navigate(self, url: str, wait_load: bool = True) -> None:
        self.send("Page.navigate", url=url)
        if wait_load:
            self.wait_for("document.readyState === 'complete'")

    def evaluate(self, expression: str) -> Any:
        """Value of a JS expression (awaited when it is a promise), as JSON."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"JS error in {expression!r}: {text}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float | None = None, poll_s: float = 0.1) -> Any:
        """Poll until the JS expression is truthy (in JS); return its value.

        A DOM node does not survive the trip as JSON, so a truthy node comes back as True.
        """
        probe = (
            "((v) => v ? {ok: true, value: v instanceof Node ? true : v} : {ok: false})"
            f"(({expression}))"
        )
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            result = self.evaluate(probe)
            if result["ok"]:
                return result["value"]
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"timed out waiting for {expression!r}; exceptions: {self.exceptions}; "
                    f"console: {self.console[-10:]}"
                )
            time.sleep(poll_s)

    def dom(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """Save a PNG of the page (the whole scroll height when ``full_page``)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = self.send("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {
                "x": 0,
                "y": 0,
                "width": size["width"],
                "height": size["height"],
                "scale": 1,
            }
        data = self.send("Page.captureScreenshot", **params)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


class Chromium:
    """A headless Chromium with remote debugging, alive for the ``with`` block.

    ``with Chromium() as browser: page = browser.page(url)`` opens a page target and
    returns a :class:`CdpPage`. Leaving the block kills the process group and deletes
    the profile.
    """

    def __init__(
        self,
        *,
        window_size: tuple[int, int] = (1280, 900),
        extra_flags: Sequence[str] = (),
        start_timeout_s: float = 15.0,
    ) -> None:
        self.binary = require_chromium()
        self.window_size = window_size
        self.extra_flags = list(extra_flags)
        self.start_timeout_s = start_timeout_s
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pages: list[CdpPage] = []
        self.port: int | None = None

    def __enter__(self) -> Chromium:
        self._profile = tempfile.TemporaryDirectory(prefix="dfmon-chromium-")
        profile = Path(self._profile.name)
        flags = ["--remote-debugging-port=0", *self.extra_flags]
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            _command(self.binary, profile, self.window_size, flags) + ["about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
            start_new_session=True,
        )
        try:
            self.port = self._wait_for_port(profile / "DevToolsActivePort")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_for_port(self, port_file: Path) -> int:
        """Chromium writes the port it picked into the profile once DevTools listens."""
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrowserError(f"Chromium exited at start: {self.stderr_tail()}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(port_file.read_text().splitlines()[0])
            time.sleep(0.05)
        raise BrowserError(f"Chromium opened no DevTools port: {self.stderr_tail()}")

    def stderr_tail(self, n_chars: int = 2000) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-n_chars:]

    def _first_page_target(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            url = f"http://127.0.0.1:{self.port}/json/list"
            with _LOCAL_HTTP.open(url, timeout=5) as response:
                targets = json.loads(response.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]
            if time.monotonic() > deadline:
                raise BrowserError("Chromium has no page target")
            time.sleep(0.05)

    def page(self, url: str | None = None, timeout_s: float = 10.0) -> CdpPage:
        """A :class:`CdpPage` on the start tab (first call) or a new tab; loads ``url``."""
        if self._pages:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT"
            )
            with _LOCAL_HTTP.open(request, timeout=5) as response:
                target = json.loads(response.read())
        else:
            target = self._first_page_target(timeout_s)
        page = CdpPage(target["webSocketDebuggerUrl"], timeout_s=timeout_s)
        page.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.window_size[0],
            height=self.window_size[1],
            deviceScaleFactor=1,
            mobile=False,
        )
        self._pages.append(page)
        if url is not None:
            page.navigate(url)
        return page

    def __exit__(self, *exc_info: object) -> None:
        for page in self._pages:
            with contextlib.suppress(Exception):
                page.close()
        self._pages.clear()
        if self._proc is not None:
            _kill_group(self._proc)
            self._proc = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None
        with contextlib.suppress(Exception):
            self._stderr.close()


@contextlib.contextmanager
def open_page(url: str, **chromium_kwargs: Any) -> Iterator[CdpPage]:
    """``with open_page(url) as page:`` for the common one-page case."""
    with Chromium(**chromium_kwargs) as browser:
        yield browser.page(url)
