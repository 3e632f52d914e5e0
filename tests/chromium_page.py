"""Open an HTML file in headless Debian chromium, with no extra package.

- :func:`open_page`: the DOM after its scripts ran and chromium's log (``--dump-dom``);
- :class:`DevTools`: the DevTools protocol over ``--remote-debugging-pipe`` (file descriptors
  3 and 4, NUL-separated JSON): an exact viewport width (a headless window cannot be narrower
  than 500 px, an emulated viewport can), every console message and uncaught exception,
  JavaScript evaluated in the page, and full-page screenshots.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


def chromium_exe() -> str:
    """Debian's chromium; a failure under CI (where .ci/run installs it), a skip elsewhere."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but Debian's chromium is not installed (apt-get install "
                        "chromium); the HTML report test cannot run")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def open_page(html: Path) -> tuple[str, str]:
    """(DOM after load, chromium's log) of ``html``, with a fresh profile."""
    exe = chromium_exe()
    with tempfile.TemporaryDirectory() as profile:
        p = subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--dump-dom", html.resolve().as_uri()],
            check=False, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, p.stderr


class DevTools:
    """One headless chromium driven through the DevTools protocol on a pipe.

    ``with DevTools() as dt: dt.open(path, width=400); dt.evaluate("...")``;
    ``dt.console`` collects ``(level, text)`` of every console message, log entry and
    uncaught exception of the page.
    """

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self.console: list[tuple[str, str]] = []
        self._id = 0
        self._buf = b""
        self._events: list[dict] = []
        self._session: str | None = None

    def __enter__(self) -> DevTools:  # noqa: PYI034
        exe = chromium_exe()
        self._profile = tempfile.TemporaryDirectory()
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child: the pipe on fds 3 (commands in) and 4 (answers out)
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        # close_fds=False: fds 3/4 must survive; every other fd Python opened is
        # non-inheritable (PEP 446) and closes at exec anyway
        self._proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self._profile.name}", "--remote-debugging-pipe",
             "about:blank"], preexec_fn=fds, close_fds=False,  # noqa: PLW1509 (no threads)
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target,
                                  flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._session = None
            self.send("Browser.close")
        except (OSError, AssertionError, TimeoutError):
            pass
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        self._profile.cleanup()

    # -- protocol
    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("chromium did not answer")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise OSError("chromium closed the DevTools pipe")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def _note(self, ev: dict) -> None:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            self.console.append((p["type"], text))
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.console.append(("exception", d.get("exception", {}).get("description")
                                 or d.get("text", "")))
        elif m == "Log.entryAdded":
            self.console.append((p["entry"]["level"], p["entry"]["text"]))
        self._events.append(ev)

    def send(self, method: str, **params: Any) -> dict:
        """Run one command (in the page's session once attached) and return its result."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self._session is not None:
            msg["sessionId"] = self._session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            ans = self._read(deadline)
            if ans.get("id") == self._id:
                assert "error" not in ans, f"{method}: {ans['error']}"
                return ans.get("result", {})
            self._note(ans)

    def wait_for(self, method: str) -> dict:
        """The next event ``method`` (events already received count)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, ev in enumerate(self._events):
                if ev.get("method") == method:
                    return self._events.pop(i)
            self._note(self._read(deadline))

    # -- page
    def open(self, html: Path, width: int, height: int = 900) -> None:
        """Load ``html`` in a ``width`` x ``height`` viewport and wait for its load event."""
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self._events.clear()
        self.send("Page.navigate", url=html.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (promises awaited); raises on an
        exception."""
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        assert "exceptionDetails" not in r, r["exceptionDetails"]
        return r["result"].get("value")

    def screenshot(self, path: Path) -> None:
        """The whole page (not only the viewport) as PNG."""
        size = self.evaluate("[document.documentElement.scrollWidth,"
                             "document.documentElement.scrollHeight]")
        r = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                      clip={"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1})
        path.write_bytes(base64.b64decode(r["data"]))
