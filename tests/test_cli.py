"""train.py as a user runs it: a subprocess from the repo root, writing under outputs/ (here: a tmp root)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import child_env, run_train

pytestmark = pytest.mark.slow


def _only_run_dir(root: Path) -> Path:
    (run_dir,) = (root / "runs").iterdir()
    return run_dir


def test_mlp_with_mse_runs_end_to_end(tmp_path):
    proc = run_train("model=mlp", "loss=mse", f"paths.root={tmp_path}", "trainer.max_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run_dir(tmp_path)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["epoch"] == 3
    assert record["test/loss"] < 0.5  # the target variance is ~10: an MLP after 3 epochs is far below it
    assert (run_dir / "train.log").read_text().count("final metrics written") == 1
    assert (
        "Trainer.fit` stopped" in (run_dir / "train.log").read_text()
    )  # Lightning's own lines reach the log
    assert "_target_: gdlab.models.MLP" in (run_dir / "config.yaml").read_text()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(k.startswith("net.net.") for k in ckpt["state_dict"])
    assert list(run_dir.glob("events.out.tfevents.*"))  # in the run dir: TensorBoard names the run by it
    # A console a user reads: the overrides in one line, a line per epoch (no bar: not a terminal),
    # Lightning's lines once (not also by Lightning's own handler), no upsell, no deprecation noise.
    console = proc.stdout + proc.stderr
    assert "overrides: model=mlp loss=mse" in console and "hidden_sizes" not in console
    assert "epoch 3/3 (" in console and "it/s" not in console
    assert console.count("Trainer.fit` stopped") == 1 and "INFO: " not in console
    assert "Tip:" not in console and "deprecated" not in console
    assert len(console.splitlines()) <= 40, console


def test_console_script_and_fast_dev_run(tmp_path):
    exe = shutil.which("gdlab-train", path=str(Path(sys.executable).parent))
    assert exe, "the gdlab-train console script is installed with the project"
    proc = subprocess.run(
        [exe, "debug=fdr", f"paths.root={tmp_path}"],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((_only_run_dir(tmp_path) / "metrics.json").read_text())
    assert record["status"] == "completed" and record["step"] == 1


def test_multirun_writes_one_directory_per_job(tmp_path):
    proc = run_train("-m", "optimizer.lr=0.01,0.1", f"paths.root={tmp_path}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    jobs = sorted(p.name for p in sweep_dir.iterdir() if (p / "metrics.json").is_file())
    assert [j.split("_trainer")[0] for j in jobs] == ["0_optimizer.lr-0.01", "1_optimizer.lr-0.1"]
    losses = [json.loads((sweep_dir / j / "metrics.json").read_text())["val/loss"] for j in jobs]
    assert losses[1] < losses[0]  # 2 epochs: the larger (stable) step gets further


def test_unknown_option_lists_the_choices(tmp_path):
    proc = run_train("model=foo", f"paths.root={tmp_path}", measured=True)
    assert proc.returncode != 0
    assert "model" in proc.stderr and "mlp" in proc.stderr and "linear" in proc.stderr
