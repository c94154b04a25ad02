"""The CUDA tier (marker ``cuda``; skipped without a CUDA device, so plain pytest and ``scripts/dev.sh test``
run it wherever CUDA is there): the same run on CPU and CUDA agrees within a stated tolerance for the
linear model, the MLP and the CNN; a deterministic CUDA run repeats bit for bit; a CUDA run interrupted
and resumed ends bit for bit where an uninterrupted one does. (The vectorized launcher on CUDA:
tests/test_vectorized_runs.py.)

Bitwise repeats on CUDA need ``trainer.deterministic=true`` (Lightning then calls
``torch.use_deterministic_algorithms(True)``) and ``CUBLAS_WORKSPACE_CONFIG`` set before cuBLAS starts: those
runs are processes of their own, started with it in their environment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gdlab.train import train
from tests.conftest import make_cfg, run_train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

# (the model's overrides, its data): tiny runs, a few dozen steps each
MODELS = {
    "linear": ("data.n_samples=400",),
    "mlp": ("model=mlp", "model.hidden_sizes=[32,32]", "data.n_samples=400"),
    "cnn": ("model=cnn", "data=digits", "loss=cross_entropy", "trainer.limit_train_batches=8"),
}
SHORT = ("trainer.max_epochs=2", "data.batch_size=32", "logger=none", "callbacks=minimal")
# CPU vs CUDA: the same arithmetic in another order (reductions, fused kernels; cuDNN's convolutions may
# use TF32 in float32). In float64 the runs agree to about 1e-12 relative after these few steps; the
# tolerance leaves room for the order of summation to be amplified by training. In float32 (the default
# precision) the bound is the one a user can expect of a short run.
TOLERANCE = {"64-true": 1e-8, "32-true": 1e-2}
# cuBLAS's deterministic workspace (torch's documented setting for use_deterministic_algorithms on CUDA)
DETERMINISTIC_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


def _record(run_dir: Path) -> dict:
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed", record
    return record


@pytest.mark.parametrize("precision", sorted(TOLERANCE))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_cpu_and_cuda_agree_within_the_stated_tolerance(tmp_path, model, precision):
    runs = {}
    for trainer in ("cpu", "gpu"):
        out = tmp_path / trainer
        train(make_cfg(out, *MODELS[model], *SHORT, f"trainer={trainer}", f"trainer.precision={precision}"))
        runs[trainer] = out
    cpu, gpu = _record(runs["cpu"]), _record(runs["gpu"])
    assert cpu["step"] == gpu["step"] > 0
    rel = TOLERANCE[precision]
    for key in ("train/loss", "val/loss", "test/loss"):
        assert gpu[key] == pytest.approx(cpu[key], rel=rel), key
    wc, wg = _weights(runs["cpu"]), _weights(runs["gpu"])
    assert wc.keys() == wg.keys()
    for key in wc:
        assert torch.allclose(wg[key].double(), wc[key].double(), rtol=rel, atol=rel), key


def _gpu_run(run_dir: Path, *args: str):
    """``python train.py trainer=gpu trainer.deterministic=true ...`` in a process of its own."""
    return run_train(
        *args,
        "trainer=gpu",
        "trainer.deterministic=true",
        f"hydra.run.dir={run_dir}",
        env=DETERMINISTIC_ENV,
    )


@pytest.mark.slow
def test_a_deterministic_cuda_run_repeats_bit_for_bit(tmp_path):
    """The CNN (cuDNN convolutions: the kernels that vary when not asked to be deterministic), twice."""
    for name in ("a", "b"):
        proc = _gpu_run(tmp_path / name, *MODELS["cnn"], *SHORT)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _record(tmp_path / "a") == _record(tmp_path / "b")  # every value, bit for bit


# 280 training samples in batches of 32: 9 steps per epoch, 36 in all; last.ckpt every 4 steps.
RESUMED = (
    "model=mlp",
    "data.n_samples=400",
    "data.batch_size=32",
    "trainer.max_epochs=4",
    "logger=none",
    "callbacks=minimal",
    "callbacks.last_checkpoint.every_n_train_steps=4",
)


@pytest.mark.slow
def test_a_cuda_run_interrupted_and_resumed_ends_bit_for_bit_where_an_uninterrupted_one_does(tmp_path):
    uninterrupted = tmp_path / "uninterrupted"
    proc = _gpu_run(uninterrupted, *RESUMED)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "interrupted"
    stop = (
        "+callbacks.signal._target_=tests.crash.SignalAtStep",
        "+callbacks.signal.step=23",  # the middle of epoch 3
        "+callbacks.signal.signal_name=SIGINT",
    )
    interrupted = _gpu_run(run_dir, *RESUMED, *stop)
    assert interrupted.returncode == 130, interrupted.stderr[-3000:]
    resumed = run_train(f"resume={run_dir}", env=DETERMINISTIC_ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = _weights(run_dir), _weights(uninterrupted)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _record(run_dir)["test/loss"] == _record(uninterrupted)["test/loss"]
