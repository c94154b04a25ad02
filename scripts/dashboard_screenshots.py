"""Screenshots of TensorBoard's dashboards for a finished run or sweep, taken with headless Chromium.

    python scripts/dashboard_screenshots.py outputs/multirun/<time> screenshots/

starts ``tensorboard --logdir <logdir>`` on a free local port, waits until it has read the runs, and
writes one PNG per dashboard into the output folder: ``landing.png`` (the page TensorBoard opens on),
``custom_scalars.png`` (gdlab's layout: the losses first), ``images.png`` and ``hparams.png``. Each shot
is taken once the page has rendered (its charts drawn, its tables filled), not after a fixed wait. It needs
Debian's ``chromium`` package (``apt-get install chromium``); without it the script says so and exits 0
having written nothing, so it can sit in a script that also runs where no browser is installed.

Chromium is driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``: JSON messages
on file descriptors 3 and 4), which needs nothing beyond the standard library and reads the page as it is
rendered, inside the dashboards' shadow DOM too (what ``--dump-dom`` leaves out).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# name -> the part of the URL after the host: the page TensorBoard opens on, then the dashboards.
PAGES = {
    "landing": "/",
    "custom_scalars": "/#custom_scalars",
    "images": "/#images",
    "hparams": "/#hparams",
}
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)

# What a person sees on the page, read in the browser: every text (shadow roots included; no styles or
# scripts), each chart card's title with the number of lines drawn in it (Plottable's `path.line` with a
# shape), and whether a spinner or progress bar is still showing.
SEEN = """(() => {
  const QUIET = ['STYLE', 'SCRIPT', 'TEMPLATE'];
  const elements = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.children || []) { elements.push(child); walk(child); }
  };
  walk(document);
  const inside = (root) => { const found = []; const go = (n) => { if (n.shadowRoot) go(n.shadowRoot);
    for (const c of n.children || []) { found.push(c); go(c); } }; go(root); return found; };
  const shown = (e) => e.getClientRects().length > 0;
  const text = [];
  for (const e of elements) {
    if (QUIET.includes(e.tagName)) continue;
    for (const c of e.childNodes) {
      const t = c.nodeType === 3 ? c.textContent.trim() : '';
      if (t && shown(e)) text.push(t);
    }
  }
  const charts = elements.filter((e) => e.tagName.endsWith('-CHART-CARD') && shown(e)).map((card) => {
    const parts = inside(card);
    const heading = parts.find((e) => e.tagName === 'TF-CARD-HEADING');
    const title = heading ? [heading, ...inside(heading)].filter((e) => !QUIET.includes(e.tagName))
      .flatMap((e) => [...e.childNodes]).filter((c) => c.nodeType === 3)
      .map((c) => c.textContent.trim()).filter((t) => t).join(' ') : '';
    const lines = parts.filter((e) => e.tagName === 'path' && e.classList.contains('line')
      && (e.getAttribute('d') || '').length > 10);
    return {title, lines: lines.length};
  });
  const busy = elements.some((e) => ['PAPER-SPINNER-LITE', 'MAT-SPINNER', 'MAT-PROGRESS-SPINNER']
    .includes(e.tagName) && e.hasAttribute('active') && shown(e));
  return {text, charts, busy};
})()"""


@dataclass
class Rendered:
    """One dashboard as the browser showed it: the screenshot, the texts and the chart cards."""

    name: str
    path: Path
    text: list[str] = field(default_factory=list)
    charts: list[dict[str, Any]] = field(default_factory=list)


def find_chromium() -> str | None:
    """The Chromium executable (Debian's package installs /usr/bin/chromium), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def start_tensorboard(
    logdir: Path, port: int, timeout: float = 120.0, settle_s: float = 3.0
) -> subprocess.Popen[bytes]:
    """``tensorboard --logdir logdir`` on 127.0.0.1:port, returned once it has read every run: the list of
    runs with data is not empty and has not changed for ``settle_s`` (it reloads each second)."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--reload_interval", "1"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline, listed, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        if server.poll() is not None:
            stderr = server.stderr.read().decode(errors="replace") if server.stderr else ""
            raise RuntimeError(f"tensorboard exited with status {server.returncode}:\n{stderr}")
        try:
            runs = _get_json(f"http://127.0.0.1:{port}/data/runs")
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            runs = None
        if runs != listed:
            listed, since = runs, time.monotonic()
        elif runs and time.monotonic() - since >= settle_s:
            return server
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"tensorboard found no runs under {logdir} within {timeout:.0f} s")


def _above_4(fd: int) -> int:
    """``fd`` moved to a descriptor number above 4 (closed on exec, like the original)."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return moved


class Browser:
    """Headless Chromium in a fresh profile, driven over the DevTools protocol's pipe (one page)."""

    def __init__(self, chromium: str, size: tuple[int, int] = (1400, 900)) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="gdlab-chromium-")
        commands, self._to_browser = os.pipe()  # Chromium reads commands on its fd 3 ...
        self._from_browser, replies = os.pipe()  # ... and writes replies on its fd 4
        commands, replies = (
            _above_4(commands),
            _above_4(replies),
        )  # so that neither dup2 below undoes the other

        def on_fds_3_and_4() -> None:
            os.dup2(commands, 3)
            os.dup2(replies, 4)

        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}"]
        command += [f"--window-size={size[0]},{size[1]}", "--remote-debugging-pipe", "about:blank"]
        self._process = subprocess.Popen(
            command,
            preexec_fn=on_fds_3_and_4,
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands)
        os.close(replies)
        self._pending, self._last_id = b"", 0
        (page,) = [t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page"]
        self._session = self._call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:  # replies and events, each ended by a NUL byte; events are not needed here
            while b"\0" not in self._pending:
                chunk = os.read(self._from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited while answering {method}")
                self._pending += chunk
            raw, self._pending = self._pending.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._last_id:
                if "error" in reply:
                    raise RuntimeError(f"chromium: {method}: {reply['error'].get('message')}")
                return reply["result"]

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """A DevTools command to the page (``Page.navigate``, ``Runtime.evaluate``, ...)."""
        return self._call(method, session=self._session, **params)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"chromium: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        return base64.b64decode(self.page("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):  # it may be gone already
            self._call("Browser.close")
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        os.close(self._to_browser)
        os.close(self._from_browser)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def render(
    browser: Browser,
    url: str,
    wait_ms: int,
    ready: Callable[[dict[str, Any]], bool] | None = None,
    settle_s: float = 1.5,
) -> tuple[bytes, dict[str, Any]]:
    """Load ``url`` afresh and take its screenshot once what the page shows has settled (unchanged for
    ``settle_s``, nothing loading, something shown, and ``ready(seen)`` where given), or after ``wait_ms``;
    with what it showed (:data:`SEEN`)."""
    browser.page("Page.navigate", url="about:blank")  # a new page load, not a change of the URL's #part
    browser.page("Page.navigate", url=url)
    deadline = time.monotonic() + wait_ms / 1000
    previous, since = None, time.monotonic()
    while True:
        time.sleep(0.25)
        seen, now = browser.evaluate(SEEN), time.monotonic()
        if seen != previous or seen["busy"] or not seen["text"] or (ready is not None and not ready(seen)):
            previous, since = seen, now
        elif now - since >= settle_s:
            return browser.screenshot(), seen
        if now > deadline:
            return browser.screenshot(), seen


def take_screenshots(
    logdir: Path,
    out_dir: Path,
    pages: Sequence[str] = tuple(PAGES),
    size: tuple[int, int] = (1400, 900),
    wait_ms: int = 30000,
    chromium: str | None = None,
    ready: Mapping[str, Callable[[dict[str, Any]], bool]] | None = None,
) -> list[Rendered]:
    """Start TensorBoard on ``logdir`` and write ``<page>.png`` into ``out_dir`` for each page; ``ready``
    may give a page what must be on it before its shot is taken (see :func:`render`)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium")
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_tensorboard(logdir, port)
    written = []
    try:
        with Browser(chromium, size) as browser:
            for name in pages:
                url = f"http://127.0.0.1:{port}{PAGES[name]}"
                png, seen = render(browser, url, wait_ms, (ready or {}).get(name))
                path = out_dir / f"{name}.png"
                path.write_bytes(png)
                written.append(Rendered(name, path, seen["text"], seen["charts"]))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logdir", type=Path, help="a run or sweep directory (or outputs/)")
    parser.add_argument("out_dir", type=Path, help="where the PNGs go")
    parser.add_argument("--pages", nargs="+", choices=list(PAGES), default=list(PAGES))
    parser.add_argument("--size", default="1400x900", help="window size WIDTHxHEIGHT (default 1400x900)")
    parser.add_argument(
        "--wait-ms", type=int, default=30000, help="the longest wait for a page to render (ms)"
    )
    args = parser.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("skipped: chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 0
    if not args.logdir.is_dir():
        parser.error(f"no such directory: {args.logdir}")
    width, _, height = args.size.partition("x")
    written = take_screenshots(
        args.logdir, args.out_dir, args.pages, (int(width), int(height)), args.wait_ms, chromium
    )
    print("wrote " + ", ".join(str(r.path) for r in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
