"""Crash recovery as a user meets it: a training process killed (SIGKILL) or interrupted (Ctrl+C) in the
middle of an epoch, then `python train.py resume=...`, ends with the same weights, bit for bit, as a
run that was never interrupted."""

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import run_train

pytestmark = pytest.mark.slow

# 280 training samples in batches of 32: 9 steps per epoch, 36 in all; last.ckpt every 4 steps.
RUN = (
    "data.n_samples=400",
    "data.batch_size=32",
    "trainer.max_epochs=4",
    "trainer=cpu",
    "callbacks=minimal",
    "callbacks.last_checkpoint.every_n_train_steps=4",
)
STEPS = 36


def _signal_at(step: int, name: str) -> tuple[str, ...]:
    return (
        "+callbacks.signal._target_=tests.crash.SignalAtStep",
        f"+callbacks.signal.step={step}",
        f"+callbacks.signal.signal_name={name}",
    )


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    return ckpt["state_dict"]


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    proc = run_train(*RUN, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def test_sigkill_then_resume_is_bitwise_identical(uninterrupted, tmp_path):
    # Killed at step 28 (batch 1 of epoch 3): last.ckpt is the end of epoch 2 (step 27, after validation);
    # the Ctrl+C test below resumes from the middle of an epoch.
    kill_step, saved_step, served = 28, 27, 9
    run_dir = tmp_path / "run"
    killed = run_train(*RUN, *_signal_at(kill_step, "SIGKILL"), f"hydra.run.dir={run_dir}")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "running"  # what a kill leaves
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == saved_step
    state = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert state == [{"epoch": 2, "batches_served": served}]

    resumed = run_train(f"resume={run_dir}")  # the run's own overrides come back from .hydra/overrides.yaml
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_bitwise_equal(_weights(run_dir), _weights(uninterrupted))
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed" and record["step"] == STEPS
    reference = json.loads((uninterrupted / "metrics.json").read_text())
    assert record["test/loss"] == reference["test/loss"]
    # the same run directory, hence the same TensorBoard run: event files of both processes side by side
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 2
    assert "resuming from" in (run_dir / "train.log").read_text()
    for path in (run_dir / "checkpoints").glob("*.ckpt"):  # best-*.ckpt too
        torch.load(path, weights_only=True)
    assert not list((run_dir / "checkpoints").glob(".*tmp"))  # last.ckpt is written via a renamed temp file


def test_ctrl_c_saves_last_ckpt_records_interrupted_and_resumes_exactly(uninterrupted, tmp_path):
    run_dir = tmp_path / "runs" / "interrupted"
    interrupted = run_train(*RUN, *_signal_at(23, "SIGINT"), f"hydra.run.dir={run_dir}")
    assert interrupted.returncode == 130 and "interrupted (Ctrl+C)" in interrupted.stderr
    assert "Traceback" not in interrupted.stderr and "Logging error" not in interrupted.stderr
    assert "Ctrl+C: stopping at the end of training step 23" in interrupted.stdout + interrupted.stderr
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "interrupted" and record["step"] == 23
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 23  # saved on the interrupt, not the periodic one of step 20

    # ckpt_path=last: the newest run under paths.root, continued in its own directory
    resumed = run_train("ckpt_path=last", f"paths.root={tmp_path}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["interrupted"]
    _assert_bitwise_equal(_weights(run_dir), _weights(uninterrupted))
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
