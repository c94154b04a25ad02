"""Screenshots of TensorBoard's dashboards for a finished run or sweep, taken with headless Chromium.

    python scripts/dashboard_screenshots.py outputs/multirun/<time> screenshots/

starts ``tensorboard --logdir <logdir>`` on a free local port, waits until it has read the runs, and
writes one PNG per dashboard into the output folder: ``landing.png`` (the page TensorBoard opens on),
``custom_scalars.png`` (gdlab's layout: the losses first), ``images.png`` and ``hparams.png``. It needs
Debian's ``chromium`` package (``apt-get install chromium``); without it the script says so and exits 0
having written nothing, so it can sit in a script that also runs where no browser is installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

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


def start_tensorboard(logdir: Path, port: int, timeout: float = 120.0) -> subprocess.Popen[bytes]:
    """``tensorboard --logdir logdir`` on 127.0.0.1:port, returned once it lists a run with data."""
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            stderr = server.stderr.read().decode(errors="replace") if server.stderr else ""
            raise RuntimeError(f"tensorboard exited with status {server.returncode}:\n{stderr}")
        try:
            if _get_json(f"http://127.0.0.1:{port}/data/runs"):
                time.sleep(3)  # the first listing can precede the last run's tags
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        time.sleep(0.5)
    server.terminate()
    raise RuntimeError(f"tensorboard found no runs under {logdir} within {timeout:.0f} s")


def screenshot(chromium: str, url: str, path: Path, size: tuple[int, int], wait_ms: int) -> None:
    """One headless Chromium screenshot of ``url``, in a fresh profile (no remembered settings)."""
    with tempfile.TemporaryDirectory(prefix="gdlab-chromium-") as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        command += [f"--window-size={size[0]},{size[1]}", f"--virtual-time-budget={wait_ms}"]
        command += [f"--screenshot={path}", url]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url}")


def take_screenshots(
    logdir: Path,
    out_dir: Path,
    pages: Sequence[str] = tuple(PAGES),
    size: tuple[int, int] = (1400, 900),
    wait_ms: int = 15000,
    chromium: str | None = None,
) -> list[Path]:
    """Start TensorBoard on ``logdir`` and write ``<page>.png`` into ``out_dir`` for each page."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium")
    out_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_tensorboard(logdir, port)
    written = []
    try:
        for name in pages:
            path = out_dir / f"{name}.png"
            screenshot(chromium, f"http://127.0.0.1:{port}{PAGES[name]}", path, size, wait_ms)
            written.append(path)
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
    parser.add_argument("--wait-ms", type=int, default=15000, help="page time before the shot (ms)")
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
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
