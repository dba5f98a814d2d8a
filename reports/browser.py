"""Headless Chromium over the DevTools protocol: open a report offline, wait for it to draw, screenshot it.

Used by the browser tests and for the README screenshots. One browser process
serves many pages (a fresh tab each, so console messages never mix); the
network is switched off per tab and every request that is not `file:` or
`data:` is recorded, so a page that reaches for a CDN fails loudly.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from websockets.sync.client import connect

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WAIT_RENDER = """new Promise((resolve) => {
  const t0 = Date.now();
  (function poll() {
    const s = document.documentElement && document.documentElement.dataset.render;
    if (s) resolve(s); else if (Date.now() - t0 > %d) resolve("timeout"); else setTimeout(poll, 25);
  })();
})"""
DATA_MARKS = (  # Vega's SVG labels every drawn item; axes, legends and titles are not data
    "#vis svg [role=graphics-symbol]:not([aria-roledescription=axis]):not([aria-roledescription=legend])"
    ":not([aria-roledescription=title]), #vis canvas"
)
COUNT_MARKS = f"document.querySelectorAll({DATA_MARKS!r}).length"


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or did not answer."""


def find_chromium() -> str:
    for name in (os.environ.get("KVW_CHROMIUM"), *CANDIDATES):
        if name and (path := shutil.which(name)):
            return path
    raise BrowserError("no Chromium found: `apt-get install chromium` (scripts/test.sh does) or set KVW_CHROMIUM")


@dataclass
class Page:
    """One tab: what it logged, requested and drew."""

    browser: Browser
    session: str
    target: str
    errors: list[str] = field(default_factory=list)  # console.error, uncaught exceptions, failed loads
    warnings: list[str] = field(default_factory=list)  # console.warn (Vega reports spec problems here)
    requests: list[str] = field(default_factory=list)  # every URL that is not file: or data:
    dialogs: list[str] = field(default_factory=list)  # alert()/confirm(): injected script ran
    loaded: bool = False
    state: str = ""

    def send(self, method: str, **params) -> dict:
        return self.browser.send(method, params, session=self.session)

    def evaluate(self, expression: str, timeout: float = 30.0):
        res = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session=self.session,
            timeout=timeout,
        )
        if "exceptionDetails" in res:
            raise BrowserError(f"evaluate failed: {res['exceptionDetails'].get('text')}: {expression[:80]}")
        return res["result"].get("value")

    def marks(self) -> int:
        """Drawn data marks: SVG items Vega labels as graphics symbols, or canvases."""
        return int(self.evaluate(COUNT_MARKS))

    def hover(self, x: float, y: float) -> None:
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)

    def screenshot(self, path: str | os.PathLike, max_height: int = 2400, scale: float = 1.0) -> Path:
        size = self.send("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], max_height), "scale": scale}
        data = self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True, clip=clip)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def on_event(self, method: str, params: dict) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            if params["type"] in ("error", "assert"):
                self.errors.append(f"console.{params['type']}: {text}")
            elif params["type"] == "warning":
                self.warnings.append(text)
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            self.errors.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "about:")):
                self.requests.append(url)
        elif method == "Page.javascriptDialogOpening":
            self.dialogs.append(f"{params.get('type')}: {params.get('message')}")
            self.browser.send_nowait("Page.handleJavaScriptDialog", {"accept": True}, session=self.session)
        elif method == "Page.loadEventFired":
            self.loaded = True


class Browser:
    """A headless Chromium with a fresh profile, driven over one DevTools websocket."""

    def __init__(self, width: int = 1400, height: int = 900, executable: str | None = None, timeout: float = 60.0):
        self.width, self.height, self.timeout = width, height, timeout
        self.executable = executable or find_chromium()
        self._id = 0
        self._pages: dict[str, Page] = {}

    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="kvw-chromium-")
        log = Path(self.profile) / "chromium.log"
        with log.open("w") as fh:  # a file, not a pipe: nothing blocks when nobody reads it
            self.proc = subprocess.Popen(
                [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdout=subprocess.DEVNULL,
                stderr=fh,
                start_new_session=True,
            )
        port_file, deadline = Path(self.profile) / "DevToolsActivePort", time.time() + 30
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.time() > deadline:
                self.close()
                raise BrowserError(f"{self.executable} did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        port, ws_path = port_file.read_text().split()[:2]
        url = f"ws://127.0.0.1:{port}{ws_path}"
        self.ws = connect(url, max_size=None, open_timeout=10)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
            self.ws = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send_nowait(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        return self._id

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout=None) -> dict:
        want = self.send_nowait(method, params, session)
        deadline = time.time() + (timeout or self.timeout)
        while True:
            msg = self._recv(deadline, method)
            if msg.get("id") == want:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error'].get('message')}")
                return msg.get("result", {})

    def _recv(self, deadline: float, waiting_for: str) -> dict:
        left = deadline - time.time()
        if left <= 0:
            raise BrowserError(f"no answer from Chromium to {waiting_for}")
        try:
            msg = json.loads(self.ws.recv(timeout=left))
        except TimeoutError:
            raise BrowserError(f"no answer from Chromium to {waiting_for}") from None
        if "method" in msg and (page := self._pages.get(msg.get("sessionId", ""))):
            page.on_event(msg["method"], msg.get("params", {}))
        return msg

    def open(self, path: str | os.PathLike) -> Page:
        """Load a local page in a fresh offline tab and wait until it reports its render state."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        self._pages[session] = page
        for domain in ("Runtime", "Log", "Page", "Network"):
            page.send(f"{domain}.enable")
        page.send(
            "Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1, uploadThroughput=-1
        )
        page.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=self.height,
            deviceScaleFactor=1,
            mobile=False,
        )
        page.send("Page.navigate", url=Path(path).resolve().as_uri())
        deadline = time.time() + self.timeout
        while not page.loaded:
            self._recv(deadline, f"the load event of {path}")
        page.state = page.evaluate(WAIT_RENDER % int(self.timeout * 1000), timeout=self.timeout + 5)
        page.evaluate("new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted
        return page

    def close_page(self, page: Page) -> None:
        self.send("Target.closeTarget", {"targetId": page.target})
        self._pages.pop(page.session, None)


def main(argv: list[str] | None = None) -> int:
    """`python -m reports.browser OUT_DIR PAGE.html...`: render pages offline, print what they logged, save PNGs."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m reports.browser", description=main.__doc__)
    ap.add_argument("out", help="folder for the PNGs")
    ap.add_argument("pages", nargs="+")
    ap.add_argument("--scale", type=float, default=1.0, help="PNG scale (0.6 for small README images)")
    ap.add_argument("--max-height", type=int, default=2400)
    a = ap.parse_args(argv)
    bad = 0
    with Browser() as browser:
        for name in a.pages:
            page = browser.open(name)
            png = page.screenshot(Path(a.out) / f"{Path(name).stem}.png", a.max_height, a.scale)
            ok = page.state in ("done", "nodata") and not page.errors and not page.requests
            bad += not ok
            print(f"{'ok ' if ok else 'BAD'} {name}: {page.state}, {page.marks()} marks, {png} "
                  f"errors={page.errors} warnings={page.warnings} requests={page.requests}")  # fmt: skip
            browser.close_page(page)
    return 1 if bad else 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
