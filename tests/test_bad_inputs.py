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
from tests.documented import assert_documented

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


def _corrupt(folder: Path) -> None:
    for name in MNIST_FILES:  # valid gzip (fixed mtime: the same md5 each time), but not the published files
        (folder / f"{name}.gz").write_bytes(gzip.compress(b"not an idx file", mtime=0))


LINEAR_CKPT = "<a linear run's last.ckpt>"
LINEAR_RUN = "<a linear run>"
# (the input as docs/errors.md shows it, the setting the line must name (None: the command line itself),
#  what else the case needs that the docs leave out). Each runs as `python train.py <input>` from a fresh
#  directory; the line must name the setting and its value, and be the one docs/errors.md shows.
CASES = [
    ("model=foo", "model", []),
    ("optimizer.momentum=0.9", "optimizer.momentum", []),
    ("optimizer.lr=[0.1", None, []),
    ("optimizer.lr=abc", "optimizer.lr", []),
    ("data.n_samples=abc", "data.n_samples", []),  # any component: the type its signature declares
    ("trainer.accelerator=7", "trainer.accelerator", []),
    ("callbacks.model_checkpoint.monitor=abc", "callbacks.model_checkpoint.monitor", []),  # Lightning, in fit
    ("callbacks.pictures=5", "callbacks.pictures", []),
    ("trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch", []),
    ("trainer.val_check_interval=0", "trainer.val_check_interval", []),
    ("data.batch_size=x", "data.batch_size", []),
    ("seed=1.5", "seed", []),
    ("seed=null", "seed", []),
    ("seed=-1", "seed", []),
    ("data.shuffle_seed=1000000000000000", "data.shuffle_seed", []),
    ("trainer.max_epochs=2.5", "trainer.max_epochs", []),
    ("optimizer.lr=0", "optimizer.lr", []),
    ("optimizer.lr=inf", "optimizer.lr", []),
    ("data.noise_std=nan", "data.noise_std", []),
    ("data.batch_size=0", "data.batch_size", []),
    ("data.n_samples=5", "data.n_samples", []),
    ("data.val_fraction=1.5", "data.val_fraction", []),
    ("data.val_fraction=0.5 data.test_fraction=0.5", "data.val_fraction", []),
    ("data=polynomial data.degree=0", "data.degree", []),
    ("data=mnist data.download=false", "data.data_dir", []),  # the files are missing
    ("data=mnist", "data.data_dir", ["{corrupt}"]),
    ("data=mnist data.md5={train-images.gz:0}", "data.md5", []),
    ("model=mlp model.hidden_sizes=[]", "model.hidden_sizes", []),
    ("model=mlp model.activation=Foo", "model.activation", []),
    ("model._target_=gdlab.models.Foo", "model", []),
    ("+model.num_outputs=3", "model.num_outputs", []),
    ("loss=cross_entropy", "loss", []),
    ("model=cnn", "model", []),
    ("log_flush_steps=0", "log_flush_steps", []),
    ("trainer.max_epochs=0", "trainer.max_epochs", []),
    ("trainer.max_epochs=-1", "trainer.max_epochs", []),
    ("trainer.max_steps=0", "trainer.max_steps", []),
    ("trainer.devices=0", "trainer.devices", []),
    ("trainer.devices=1000000000000000", "trainer.devices", []),  # Lightning: a MemoryError listing them
    ("trainer.precision=bogus", "trainer.precision", []),
    ("trainer.num_nodes=1000000000000000", "trainer.num_nodes", []),
    ("trainer.limit_train_batches=-1", "trainer.limit_train_batches", []),
    ("trainer.limit_val_batches=1.5", "trainer.limit_val_batches", []),
    ("trainer.overfit_batches=-1", "trainer.overfit_batches", []),
    ("trainer.limit_train_batches=0", "trainer.limit_train_batches", []),
    ("trainer=ddp_cpu data.batch_size=63", "data.batch_size", []),
    ("paths.root=", "paths.root", []),
    ("hydra.run.dir=", "hydra.run.dir", []),
    ("paths.output_dir=", "paths.output_dir", []),
    ("callbacks.model_checkpoint.dirpath=", "callbacks.model_checkpoint.dirpath", []),
    ("+local=foo", "local", []),  # an optional group: Hydra alone would run without it
    ("local=foo", "local", []),
    ("data=mnist paths.data_dir=", "paths.data_dir", []),
    ("paths.root=a_file/x", "paths.root", []),
    ("data=csv", "data.path", []),
    ("data=csv data.path=nope.csv", "data.path", []),
    ("data=csv data.path=houses.csv data.target=prize", "data.target", []),
    ("data=csv data.path=text.csv", "data.path", []),  # a cell that is not a number
    ("ckpt_path=nope.ckpt", "ckpt_path", []),
    ("ckpt_path=garbage.ckpt", "ckpt_path", []),
    (f"model=mlp ckpt_path={LINEAR_CKPT}", "ckpt_path", []),
    (f"resume=<a linear run> ckpt_path={LINEAR_CKPT}", "ckpt_path", []),
    ("scheduler=step scheduler.gamma=-1", "scheduler.gamma", []),
    ("scheduler=step scheduler.step_size=0", "scheduler.step_size", []),
    ("scheduler=cosine scheduler.T_max=0", "scheduler.T_max", []),
    ("scheduler=plateau scheduler.factor=2", "scheduler.factor", []),
    ("scheduler=plateau scheduler.monitor=val/nope", "scheduler.monitor", []),  # Lightning, in fit
    ("optimizer=nesterov optimizer.momentum=0", "optimizer.momentum", []),
    ("++trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches", []),
    ("callbacks=lr_monitor", "callbacks.lr_monitor", []),  # FAST has logger=none; Lightning, in fit
    ("data=csv data.path=latin1.csv", "data.path", []),  # not UTF-8
    ("data=csv data.path=wide.csv data.target=prize", "data.target", []),  # 5000 columns: a bounded line
    ("model=mlp model.hidden_sizes=[1000000000]", "model.hidden_sizes", []),  # refused before allocating
    ("data.n_samples=10000000000", "data.n_samples", []),
    ("resume=outputs/runs/nope", "resume", []),
    ("resume=last", "resume", []),
]


def value_of(setting: str, args: list[str]) -> str | None:
    for arg in args:
        key, _, value = arg.lstrip("+").partition("=")
        if key == setting:
            return value
    return None


# The table is about 90 runs through the entry point (30 s of CPU): the slow tier, which CI runs; the fast
# tier keeps the tests below, one or two of each kind.
PARAMS = [pytest.param(*c, id=c[0], marks=[pytest.mark.slow]) for c in CASES]


@pytest.mark.parametrize(("shown", "setting", "extra"), PARAMS)
def test_bad_input_is_one_documented_line_naming_the_setting_and_its_value(
    monkeypatch, capfd, tmp_path, linear_ckpt, shown, setting, extra
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("a file where a directory should be")
    (tmp_path / "garbage.ckpt").write_bytes(b"\x00not a checkpoint")
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    (tmp_path / "houses.csv").write_text("area,rooms,age,price\n" + "50,2,10,100\n" * 20)
    (tmp_path / "text.csv").write_text("area,rooms,age,price\n50,2,10,100\n60,3,n/a,120\n")
    (tmp_path / "latin1.csv").write_bytes("área,price\n50,100\n".encode("latin-1"))
    (tmp_path / "wide.csv").write_text(",".join(f"c{i}" for i in range(5000)) + "\n" + "1," * 4999 + "1\n")
    if "{corrupt}" in extra:
        _corrupt(tmp_path / "data" / "mnist")
    args = (
        shown.replace(LINEAR_CKPT, str(linear_ckpt)).replace(LINEAR_RUN, str(linear_ckpt.parents[1])).split()
    )
    line = _cli(monkeypatch, capfd, entry.train_main, *FAST, *args)  # capfd: trainer=ddp_cpu's child too
    assert len(line) < 800, line[:1000]
    if setting is not None:
        value, plain = value_of(setting, args), line.replace('"', "").replace(" ", "")
        assert setting in line and (not value or value.replace(" ", "") in plain), line
    places = {str(tmp_path): "<cwd>", str(linear_ckpt): LINEAR_CKPT, str(linear_ckpt.parents[1]): LINEAR_RUN}
    line = re.sub(r"(the|machine's) [\d.]+ GiB (free|of memory)", r"\1 <N> GiB \2", line)  # this machine's
    assert_documented(shown, line, places)
    _no_run_looks_finished(tmp_path / "outputs")
    assert json.loads((linear_ckpt.parents[1] / "metrics.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("trainer", ["gpu", "ddp"])
def test_gpu_trainer_without_gpu(monkeypatch, capsys, tmp_path, trainer):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: trainer=gpu is valid here")
    args = (f"trainer={trainer}", "logger=none", f"paths.root={tmp_path}")
    line = _cli(monkeypatch, capsys, entry.train_main, *args)
    assert_documented("trainer=gpu", line)
    _no_run_looks_finished(tmp_path)
    assert json.loads(next(tmp_path.rglob("metrics.json")).read_text())["error"].startswith(
        "trainer: No supported"
    )


def test_an_empty_run_or_sweep_dir_writes_nothing(monkeypatch, capsys, tmp_path):
    """Hydra would write the run (or the sweep's jobs) into the directory the command runs in."""
    monkeypatch.chdir(tmp_path)
    line = _cli(monkeypatch, capsys, entry.train_main, "-m", "hydra.sweep.dir=", "seed=0,1", *FAST)
    assert_documented("-m hydra.sweep.dir=", line)
    line = _cli(monkeypatch, capsys, entry.train_main, *FAST, "hydra.run.dir=''")
    assert line.startswith("error: hydra.run.dir is empty")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "shown",
    [
        "python eval.py ckpt_path=<a linear run's last.ckpt> predict=sometimes",
        "python eval.py ckpt_path=<a linear run's last.ckpt> predict=true predict_batch_size=0",
        "python eval.py ckpt_path=<a linear run's last.ckpt> data=lineer",
    ],
)
def test_eval_settings_that_cannot_mean_what_was_meant(monkeypatch, capsys, tmp_path, linear_ckpt, shown):
    """``predict=sometimes`` would read as true, ``predict_batch_size=0`` divide by zero, and eval.py's
    optional ``data`` group would skip a misspelt option without a word."""
    args = shown.replace(LINEAR_CKPT, str(linear_ckpt)).split()[2:]
    line = _cli(monkeypatch, capsys, entry.eval_main, *args, f"paths.root={tmp_path}")
    assert_documented(shown, line, {str(linear_ckpt): LINEAR_CKPT})
    _no_run_looks_finished(tmp_path)


def test_a_finished_run_is_never_overwritten(monkeypatch, capsys, tmp_path, linear_ckpt):
    finished = linear_ckpt.parents[1]
    before = (finished / "metrics.json").read_text()
    line = _cli(monkeypatch, capsys, entry.train_main, *FAST, f"hydra.run.dir={finished}")
    assert_documented("hydra.run.dir=<a finished run>", line, {str(finished): "<that run, absolute>"})
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
    assert_documented("python eval.py", line)


def test_eval_of_a_run_directory_points_at_its_checkpoint(monkeypatch, capsys, tmp_path, linear_ckpt):
    run_dir = linear_ckpt.parent.parent
    line = _cli(monkeypatch, capsys, entry.eval_main, f"ckpt_path={run_dir}", f"paths.root={tmp_path}")
    assert_documented(
        "python eval.py ckpt_path=outputs/runs/<run>", line, {str(run_dir): "outputs/runs/<run>"}
    )


def test_eval_of_a_checkpoint_with_another_model(monkeypatch, capsys, tmp_path, linear_ckpt):
    line = _cli(
        monkeypatch,
        capsys,
        entry.eval_main,
        f"ckpt_path={linear_ckpt}",
        "model=mlp",
        f"paths.root={tmp_path}",
    )
    assert_documented(
        f"python eval.py ckpt_path={LINEAR_CKPT} model=mlp", line, {str(linear_ckpt): LINEAR_CKPT}
    )
    assert json.loads(next(tmp_path.rglob("metrics.json")).read_text())["status"] == "failed"


def test_eval_of_a_missing_predict_input(monkeypatch, capsys, tmp_path, linear_ckpt):
    monkeypatch.chdir(tmp_path)
    shown = f"python eval.py ckpt_path={LINEAR_CKPT} predict=true predict_input=nope.csv"
    args = shown.replace(LINEAR_CKPT, str(linear_ckpt)).split()[2:]
    line = _cli(monkeypatch, capsys, entry.eval_main, *args)
    assert_documented(shown, line, {str(linear_ckpt): LINEAR_CKPT})


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
    cfg = make_cfg(tmp_path, "optimizer.lr=1e-2", "data.batch_size=null", "trainer.gradient_clip_val=1.0")
    assert cfg.optimizer.lr == 0.01 and cfg.data.batch_size is None  # keys outside the table stay open
