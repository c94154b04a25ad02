"""scripts/dashboard_screenshots.py on a finished run: TensorBoard in headless Chromium, as a user sees it.

Needs Debian's chromium (/usr/bin/chromium), which CI machines do not have: skipped there."""

import subprocess
import sys
from pathlib import Path

import pytest

from gdlab.train import train
from tests.conftest import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = REPO_ROOT / "scripts" / "dashboard_screenshots.py"


@pytest.mark.slow
def test_screenshots_of_the_dashboards_of_a_finished_run(cfg_factory, tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip("needs Debian's chromium (/usr/bin/chromium) for headless screenshots")
    run_dir = tmp_path / "run"
    train(cfg_factory("trainer.max_epochs=2", "data.n_samples=200", f"paths.output_dir={run_dir}"))
    out = tmp_path / "shots"
    command = [sys.executable, str(SCRIPT), str(run_dir), str(out), "--pages", "custom_scalars", "hparams"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("custom_scalars", "hparams"):
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a rendered page, not a blank one


def test_without_chromium_the_script_says_it_skipped(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), str(tmp_path / "shots")],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},  # no chromium on this PATH
        timeout=60,
    )
    assert proc.returncode == 0 and "skipped: chromium is not installed" in proc.stderr
    assert not (tmp_path / "shots").exists()
