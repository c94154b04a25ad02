"""Every bad input docs/errors.md lists: one line naming the setting and the fix, exit status 1, no
traceback, and no run left looking finished. Runs `train.py`'s real entry point (Hydra included) in-process;
tests/test_cli.py and the subprocess cases at the end check the same from a shell."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch

from gdlab import entry
from gdlab import train as train_module
from gdlab.runs import rundir
from tests.conftest import make_cfg, run_train

FAST = ("trainer.max_epochs=1", "logger=none", "callbacks=minimal", "trainer=cpu")
MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


def _cli(monkeypatch, capsys, entry, *args: str) -> str:
    """Run ``entry`` (train or eval main) with ``args``; return its one error line (asserting there is one)."""
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        entry()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err[-2000:]
    # the user's message, not the wrapping of the library that passed it on
    assert "while resolving interpolation" not in lines[0] and "full_key" not in lines[0], lines[0]
    return lines[0]


def _no_run_looks_finished(root: Path) -> None:
    for path in root.rglob("metrics.json"):
        assert json.loads(path.read_text())["status"] == "failed", path


@pytest.fixture(scope="module")
def linear_ckpt(tmp_path_factory) -> Path:
    """A real checkpoint of the linear model (one tiny epoch)."""
    out = tmp_path_factory.mktemp("linear_ckpt")
    train_module.train(make_cfg(out, *FAST, "data.n_samples=100"))
    return out / "checkpoints" / "last.ckpt"


def _offline_dir(tmp_path: Path) -> Path:
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    return tmp_path / "data"


def _corrupt_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in MNIST_FILES:  # valid gzip, but not the published files: a checksum mismatch
        (folder / f"{name}.gz").write_bytes(gzip.compress(b"not an idx file"))
    return tmp_path / "data"


# (id, overrides (with {tmp}, {ckpt} placeholders), the error line must match)
CASES = [
    ("unknown-option", ["model=foo"], r"model=foo is not an option: choose one of .*linear, mlp"),
    (
        "unknown-key",
        ["optimizer.momentum=0.9"],
        r"Could not override 'optimizer.momentum'.*\+optimizer.momentum",
    ),
    (
        "wrong-type",
        ["optimizer.lr=abc"],
        r"optimizer\.lr=abc must be a number: pass e\.g\. optimizer\.lr=0\.1",
    ),
    (
        "lr-zero",
        ["optimizer.lr=0"],
        r"optimizer\.lr=0: Invalid learning rate: 0 \(must be finite and > 0\)",
    ),
    (
        "lr-not-finite",
        ["optimizer.lr=inf"],
        r"optimizer\.lr=inf is not a finite number: pass a finite value",
    ),
    (
        "batch-size",
        ["data.batch_size=0"],
        r"data\.batch_size=0: Invalid batch_size: 0 \(must be an integer >= 1, or None for full-batch",
    ),
    (
        "n-samples",
        ["data.n_samples=5"],
        r"data\.n_samples=5: Invalid n_samples: 5 \(too small for the splits",
    ),
    (
        "split-fraction",
        ["data.val_fraction=1.5"],
        r"data\.val_fraction=1\.5: Invalid val_fraction: 1\.5 \(must be strictly between 0 and 1\)",
    ),
    (
        "degree",
        ["data=polynomial", "data.degree=0"],
        r"data\.degree=0: Invalid degree: 0 \(must be an integer >= 1",
    ),
    (
        "missing-files-offline",
        ["data=mnist", "data.download=false", "paths.data_dir={offline}"],
        r"data\.data_dir=.*mnist: MNIST needs train-images-idx3-ubyte\.gz.* \(download=False\): put those files there"
        r".*or point data_dir at the folder",
    ),
    (
        "corrupt-dataset-file",
        ["data=mnist", "data.download=false", "paths.data_dir={corrupt}"],
        r"data\.data_dir=.*: .*train-images-idx3-ubyte\.gz has md5 .* the file is corrupt",
    ),
    ("loss-vs-data", ["loss=cross_entropy"], r"loss=cross_entropy needs classification data .*use loss=mse"),
    (
        "max-epochs",
        ["trainer.max_epochs=0"],
        r"trainer\.max_epochs=0 with trainer\.max_steps=-1 trains nothing: pass trainer\.max_epochs >= 1",
    ),
    (
        "max-epochs-forever",  # Lightning's -1 means no limit: with max_steps=-1 the run would never end
        ["trainer.max_epochs=-1"],
        r"trainer\.max_epochs=-1 with trainer\.max_steps=-1 trains forever: .*or -1 with trainer\.max_steps > 0",
    ),
    # types come from the component's own signature (LinearDataModule's n_samples: int, Trainer's accelerator)
    (
        "arg-type",
        ["data.n_samples=abc"],
        r"data\.n_samples=abc must be an integer: pass e\.g\. data\.n_samples=2000",
    ),
    (
        "arg-type-union",
        ["trainer.accelerator=1e15"],
        r"trainer\.accelerator=1e\+?15|1000000000000000\.0 must be text",
    ),
    ("seed-null", ["seed=null"], r"seed=null must be an integer: pass e\.g\. seed=0"),
    (
        "shuffle-seed",
        ["data.shuffle_seed=1000000000000000"],
        r"data\.shuffle_seed=1000000000000000: Invalid shuffle_seed",
    ),
    (
        "val-every-0",
        ["trainer.check_val_every_n_epoch=0"],
        r"trainer\.check_val_every_n_epoch=0 must be >= 1",
    ),
    (
        "not-a-callback",
        ["callbacks.pictures=5"],
        r"callbacks\.pictures=5 is not a component: give it a _target_",
    ),
    (  # raised by Lightning inside fit; its message quotes the value, so the line names the setting
        "monitor-in-fit",
        ["callbacks.model_checkpoint.monitor=abc"],
        r"callbacks\.model_checkpoint\.monitor=abc: `ModelCheckpoint\(monitor='abc'\)` could not find",
    ),
    (  # Lightning names the argument in backticks: the line names the setting
        "limit-fraction",
        ["++trainer.limit_val_batches=0.1"],
        r"trainer\.limit_val_batches=0\.1: You requested to check 0\.1 of the `val_dataloader` but 0\.1 \* 5 < 1",
    ),
    ("seed-range", ["seed=-1"], r"seed=-1 must be from 0 to 4294967295 .*pass e\.g\. seed=0"),
    (
        "devices-zero",
        ["trainer.devices=0"],
        r"trainer\.devices=0 must be a number of devices >= 1, -1 .* or auto",
    ),
    (
        "precision",
        ["trainer.precision=bogus"],
        r"trainer\.precision=bogus must be one of 64, 32, 16, .*16-mixed, .*64-true, bf16 or null",
    ),
    ("mlp-no-layers", ["model=mlp", "model.hidden_sizes=[]"], r"model\.hidden_sizes=\[\]: .*model=linear"),
    ("data-nan", ["data.noise_std=nan"], r"data\.noise_std=nan is not a finite number"),
    ("root-empty", ["paths.root="], r"paths\.root is empty: .*file system's root; pass a directory"),
    (
        "data-dir-empty",
        ["data=mnist", "paths.data_dir="],
        r"paths\.data_dir is empty: .*paths\.data_dir=data",
    ),
    (
        "ckpt-missing",
        ["ckpt_path={tmp}/nope.ckpt"],
        r"ckpt_path=.*nope\.ckpt does not exist: pass an existing",
    ),
    ("ckpt-corrupt", ["ckpt_path={garbage}"], r"ckpt_path=.*garbage\.ckpt is not a readable checkpoint"),
    (
        "ckpt-other-model",
        ["model=mlp", "ckpt_path={ckpt}"],
        r"ckpt_path holds weights of gdlab\.models\.LinearModel that do not fit model=gdlab\.models\.MLP",
    ),
    ("resume-nothing", ["resume={tmp}"], r"resume=.*checkpoints/last\.ckpt does not exist"),
    ("resume-last-nothing", ["resume=last"], r"resume=last: no run under .* has checkpoints/last\.ckpt"),
    (
        "output-dir-unwritable",
        ["paths.root={tmp}/a_file/x"],
        r"cannot write .*a_file.*pass a writable paths\.root",
    ),
]


@pytest.mark.parametrize(("overrides", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(monkeypatch, capsys, tmp_path, linear_ckpt, overrides, match):
    (tmp_path / "a_file").write_text("a file where a directory should be")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00not a checkpoint")
    places = {
        "tmp": tmp_path,
        "ckpt": linear_ckpt,
        "garbage": tmp_path / "garbage.ckpt",
        "offline": _offline_dir(tmp_path) if "{offline}" in str(overrides) else "",
        "corrupt": _corrupt_dir(tmp_path) if "{corrupt}" in str(overrides) else "",
    }
    args = [o.format(**places) for o in overrides]
    root = tmp_path / "outputs"
    line = _cli(monkeypatch, capsys, entry.train_main, *FAST, f"paths.root={root}", *args)
    assert re.search(match, line), line
    _no_run_looks_finished(root)


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_without_gpu(monkeypatch, capsys, tmp_path, trainer):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: trainer=gpu is valid here")
    args = (f"trainer={trainer}", "logger=none", f"paths.root={tmp_path}")
    line = _cli(monkeypatch, capsys, entry.train_main, *args)
    assert "trainer: No supported gpu backend found! Use trainer=cpu" in line
    _no_run_looks_finished(tmp_path)
    assert json.loads(next(tmp_path.rglob("metrics.json")).read_text())["error"].startswith(
        "trainer: No supported"
    )


def test_a_finished_run_is_never_overwritten(monkeypatch, capsys, tmp_path, linear_ckpt):
    finished = linear_ckpt.parents[1]
    before = (finished / "metrics.json").read_text()
    line = _cli(monkeypatch, capsys, entry.train_main, *FAST, f"hydra.run.dir={finished}")
    assert f"hydra.run.dir={finished} already holds a run (status: completed)" in line
    assert f"resume={finished}" in line
    assert (finished / "metrics.json").read_text() == before


def test_full_disk_stops_before_training(monkeypatch, tmp_path):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(rundir.shutil, "disk_usage", lambda path: usage._replace(free=10 * 2**20))
    with pytest.raises(
        ValueError, match=r"paths\.root: only 10\.0 MiB free on the disk .*free space or pass"
    ):
        train_module.train(make_cfg(tmp_path, *FAST))
    assert not (tmp_path / "metrics.json").exists()


def test_eval_without_ckpt_path(monkeypatch, capsys, tmp_path):
    line = _cli(monkeypatch, capsys, entry.eval_main, f"paths.root={tmp_path}")
    assert "ckpt_path is required: pass ckpt_path=<value>" in line


def test_eval_of_a_run_directory_points_at_its_checkpoint(monkeypatch, capsys, tmp_path, linear_ckpt):
    run_dir = linear_ckpt.parent.parent
    line = _cli(monkeypatch, capsys, entry.eval_main, f"ckpt_path={run_dir}", f"paths.root={tmp_path}")
    assert f"ckpt_path={run_dir} is a directory: pass the .ckpt file, e.g. ckpt_path={linear_ckpt}" in line


def test_eval_of_a_checkpoint_with_another_model(monkeypatch, capsys, tmp_path, linear_ckpt):
    line = _cli(
        monkeypatch,
        capsys,
        entry.eval_main,
        f"ckpt_path={linear_ckpt}",
        "model=mlp",
        f"paths.root={tmp_path}",
    )
    assert "holds weights of gdlab.models.LinearModel that do not fit model=gdlab.models.MLP" in line
    assert json.loads(next(tmp_path.rglob("metrics.json")).read_text())["status"] == "failed"


@pytest.mark.slow
def test_from_a_shell_one_line_and_a_failed_run(tmp_path):
    proc = run_train("optimizer.lr=-1", *FAST, f"paths.root={tmp_path}")
    assert proc.returncode == 1
    line = "optimizer.lr=-1: Invalid learning rate: -1 (must be finite and > 0)"
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {line}")
    assert "Traceback" not in proc.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == line


def test_verbose_gives_the_original_exception_with_its_traceback(monkeypatch, tmp_path):
    args = [*FAST, "data.batch_size=0", f"paths.root={tmp_path}", "verbose=true"]
    monkeypatch.setattr(sys, "argv", ["train.py", *args])
    with pytest.raises(Exception) as info:  # not SystemExit: Python prints the whole traceback
        entry.train_main()
    assert str(info.value).startswith("data.batch_size=0: Invalid batch_size: 0")
    assert type(info.value.__cause__).__name__ == "ArgumentError"  # the datamodule's own error, chained
    assert info.value.__traceback__ is not None


def test_wrong_types_are_refused_before_anything_is_built(tmp_path):
    """The settings every run has are checked (gdlab.validate) before any component is built."""
    from gdlab.errors import describe
    from gdlab.factory import build

    for override, line in [
        ("optimizer.lr=abc", "optimizer.lr=abc must be a number: pass e.g. optimizer.lr=0.1"),
        ("trainer.max_epochs=2.5", "trainer.max_epochs=2.5 must be an integer or null"),
        ("data.batch_size=x", "data.batch_size=x must be an integer or null"),
        ("seed=1.5", "seed=1.5 must be an integer: pass e.g. seed=0"),
        ("log_flush_steps=0", "log_flush_steps=0 must be >= 1"),
    ]:
        with pytest.raises(ValueError) as info:
            build(make_cfg(tmp_path, override))
        assert describe(info.value).startswith(line), describe(info.value)
    cfg = make_cfg(tmp_path, "optimizer.lr=1e-2", "data.batch_size=null", "+trainer.gradient_clip_val=1.0")
    assert cfg.optimizer.lr == 0.01 and cfg.data.batch_size is None  # keys outside the table stay open
