"""scripts/dashboard_screenshots.py on a finished sweep: TensorBoard in headless Chromium, checked for what a
person looks for, read from the rendered page: the loss chart drawn with a line per job, the HParams table
with one row per job named by its trial ID, and screenshots that are not blank.

Needs Chromium (Debian's chromium package; CI's .ci/run installs it where apt-get is there); without it
the browser test skips and says why."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image

from tests.conftest import REPO_ROOT, train_in_process

SCRIPT = REPO_ROOT / "scripts" / "dashboard_screenshots.py"
LOSS_CHART = "train/loss and val/loss"  # conf/logger/tensorboard.yaml's first chart


def _script():
    spec = importlib.util.spec_from_file_location("dashboard_screenshots", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _loss_charts(seen):
    return [chart for chart in seen["charts"] if chart["title"] == LOSS_CHART]


def _not_blank(path) -> bool:
    """A rendered page: many colours, and a good share of pixels away from the page's background."""
    pixels = image.imread(path)[..., :3].reshape(-1, 3)
    colours = np.unique((pixels * 255).round().astype(np.uint8), axis=0)
    background = np.median(pixels, axis=0)
    return len(colours) > 50 and np.mean(np.abs(pixels - background).sum(axis=1) > 0.1) > 0.05


@pytest.mark.slow
def test_the_dashboards_of_a_sweep_show_the_loss_chart_and_one_hparams_row_per_job(monkeypatch, tmp_path):
    shots = _script()
    chromium = shots.find_chromium()
    if chromium is None:
        pytest.skip(
            "no Chromium to open the dashboards in (Debian: apt-get install chromium; CI's .ci/run installs it)"
        )
    sweep_args = (
        "-m",
        "optimizer.lr=0.01,0.1",
        "trainer.max_epochs=2",
        "data.n_samples=200",
        "callbacks=minimal",
    )
    assert train_in_process(monkeypatch, *sweep_args, f"paths.root={tmp_path / 'outputs'}") == 0
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    trial_ids = [f"{job.name} @ {sweep.name}" for job in jobs]  # what gdlab names each HParams row
    assert len(trial_ids) == 2 and trial_ids[0].startswith("0_") and "optimizer.lr-0.01" in trial_ids[0]

    ready = {  # what the page must show before its shot: the test fails on what it showed by then
        "custom_scalars": lambda seen: any(c["lines"] >= 2 * len(jobs) for c in _loss_charts(seen)),
        "hparams": lambda seen: all(t in seen["text"] for t in trial_ids),
    }
    rendered = shots.take_screenshots(
        sweep,
        tmp_path / "shots",
        ["custom_scalars", "hparams"],
        chromium=chromium,
        ready=ready,
        wait_ms=60000,
    )
    pages = {r.name: r for r in rendered}

    # Custom Scalars opens on the losses: one chart, a line for train/loss and one for val/loss of each job
    scalars = pages["custom_scalars"]
    (chart,) = _loss_charts({"charts": scalars.charts})
    assert chart["lines"] >= 2 * len(jobs) and chart["lines"] % (2 * len(jobs)) == 0, scalars.charts
    assert "losses" in scalars.text  # the category the chart is in
    assert f"Matches ({2 * len(jobs)})" in scalars.text  # the chart's own count of run/tag series it drew

    # HParams: one row per job, named by its trial ID, with the learning rate and status columns
    table = pages["hparams"]
    assert sorted(t for t in table.text if " @ " in t) == trial_ids, [t for t in table.text if "@" in t]
    assert {"Trial ID", "optimizer.lr", "status", "completed"} <= set(table.text)
    assert "{'model_checkpoint'" not in " ".join(table.text)  # the callbacks column reads `minimal`

    for page in pages.values():
        assert page.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and _not_blank(page.path), page.path


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
