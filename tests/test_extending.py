"""docs/extending.md runs as written: every file it shows is written into an empty project folder, every
command it shows runs there (``python train.py`` and the installed ``gdlab-train``), and every run completes.
Also: a datamodule that breaks the contract the guide states stops in one line naming what is missing.

A code block belongs to a file when one of its first two lines is ``# file: <path>`` (the second, so that an
experiment's ``# @package _global_`` can stay first); ``bash`` blocks are commands, run line by line.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from gdlab import entry
from tests.conftest import REPO_ROOT, child_env

GUIDE = REPO_ROOT / "docs" / "extending.md"
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE = re.compile(r"^# file: (\S+)$")


def guide_blocks() -> tuple[dict[str, str], list[str]]:
    """The guide's files (path -> text) and its shell commands, in order."""
    files, commands = {}, []
    for lang, body in FENCE.findall(GUIDE.read_text()):
        head = body.splitlines()[:2]
        marked = [m.group(1) for line in head if (m := FILE.match(line))]
        if marked:
            files[marked[0]] = body
        elif lang == "bash":
            commands += [line for line in body.splitlines() if line.strip() and not line.startswith("#")]
    return files, commands


def test_the_guide_shows_each_kind_of_extension():
    files, commands = guide_blocks()
    assert {"train.py", "mylab/data.py", "mylab/models.py", "mylab/losses.py", "mylab/optim.py",
            "mylab/module.py", "mylab/callbacks.py", "conf/data/sine.yaml", "conf/model/tiny_mlp.yaml",
            "conf/loss/huber.yaml", "conf/optimizer/sign_sgd.yaml", "conf/module/weight_decay.yaml",
            "conf/experiment/sine_demo.yaml"} <= set(files)  # fmt: skip
    assert any(c.startswith("python train.py") for c in commands)
    assert any("gdlab-train" in c for c in commands)


@pytest.mark.slow
def test_every_file_and_command_of_the_guide_works_in_a_fresh_project(tmp_path):
    files, commands = guide_blocks()
    project = tmp_path / "myproject"
    for path, text in files.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(text)
    # `python` and `gdlab-train` of this environment (gdlab-train: the installed console script), and no
    # checkout on the import path: the project sees gdlab only as an installed package.
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in child_env().items() if k != "PYTHONPATH"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1")
    runs = project / "outputs" / "runs"
    for i, command in enumerate(commands):
        proc = subprocess.run(
            ["bash", "-c", command], cwd=project, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
        run_dir = sorted(runs.iterdir())[-1]
        assert len(list(runs.iterdir())) == i + 1
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed", metrics
        assert "mylab/weight_norm" in metrics and "train/penalty" in metrics and "val/loss" in metrics
        config = (run_dir / "config.yaml").read_text()
        for target in ("mylab.data.SineDataModule", "mylab.models.TinyMLP", "mylab.losses.HuberLoss",
                       "mylab.optim.SignSGD", "mylab.module.WeightDecayModule",
                       "mylab.callbacks.WeightNorm"):  # fmt: skip
            assert f"_target_: {target}" in config, command


def test_a_datamodule_that_does_not_tell_its_task_stops_in_one_line(monkeypatch, capsys, tmp_path):
    """The contract is enforced where gdlab reads it: one line naming what is missing and the guide."""
    (tmp_path / "nodata.py").write_text(
        "import lightning as L\n\n"
        "class NoTask(L.LightningDataModule):\n"
        "    input_shape = (3,)\n"
        "    num_outputs = 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["train.py", "data._target_=nodata.NoTask", "~data.n_samples",
                                      "~data.n_features", "~data.noise_std", "~data.val_fraction",
                                      "~data.test_fraction", "~data.batch_size", "~data.shuffle",
                                      "~data.shuffle_seed", "~data.seed", f"paths.root={tmp_path}",
                                      "logger=none", "callbacks=minimal", "trainer=cpu"])  # fmt: skip
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop:
        entry.train_main()
    assert stop.value.code == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: data=linear (NoTask) does not tell the module its task"), lines[0]
    assert "see docs/extending.md, section 'The datamodule contract'" in lines[0]


def test_a_datamodule_with_a_bad_input_shape_names_it(cfg_factory):
    from gdlab import validate
    from gdlab.errors import ConfigError

    class Odd:
        task, input_shape, num_outputs = "regression", (0, 3), 1

    with pytest.raises(ConfigError, match=r"gives input_shape=\(0, 3\), which must be one sample's shape"):
        validate.check_datamodule(cfg_factory(), Odd())


def test_the_guides_module_minimises_the_loss_plus_its_penalty(monkeypatch, cfg_factory, tmp_path):
    """module=<yours> swaps the LightningModule: the guide's weight-decay module, run by gdlab, ends at the
    ridge solution (bias not penalised), which the plain loss's optimum is not."""
    from gdlab.factory import build

    files, _ = guide_blocks()
    package = tmp_path / "code" / "mylab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(files["mylab/__init__.py"])
    (package / "module.py").write_text(files["mylab/module.py"])
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    wd = 0.5
    cfg = cfg_factory(
        "module._target_=mylab.module.WeightDecayModule", f"+module.weight_decay={wd}",
        "data.batch_size=null", "data.n_samples=200", "optimizer.lr=0.3", "trainer.max_epochs=100",
        "trainer.check_val_every_n_epoch=1000", "trainer.precision=64-true", "callbacks=none", "logger=none",
        "trainer=cpu",
    )  # fmt: skip
    datamodule, module, trainer = build(cfg)
    assert type(module).__name__ == "WeightDecayModule" and module.weight_decay == wd
    trainer.fit(module, datamodule=datamodule)
    assert trainer.callback_metrics["train/penalty"] > 0
    w, b = module.net.linear.weight.detach().reshape(-1), module.net.linear.bias.detach()

    x, y = (t.double() for t in datamodule.splits["train"])
    xc, yc = x - x.mean(0), (y - y.mean(0)).reshape(-1)
    m = len(x)
    ridge = torch.linalg.solve(
        2 / m * xc.T @ xc + wd * torch.eye(x.shape[1], dtype=x.dtype), 2 / m * xc.T @ yc
    )
    assert torch.allclose(w, ridge, atol=1e-8), (w, ridge)
    assert torch.allclose(b, y.mean() - x.mean(0) @ ridge, atol=1e-8)
    assert not torch.allclose(ridge, torch.linalg.lstsq(xc, yc).solution, atol=1e-3)  # the penalty matters


class BareModule(L.LightningModule):
    """A module written from scratch to the contract: no loss_fn attribute, nothing logged per step."""

    def __init__(self, net, loss_fn, optimizer, scheduler=None, schedule=None, task="", num_outputs=1):
        super().__init__()
        self.model, self.objective, self.make_optimizer = net, loss_fn, optimizer

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.objective(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", self.objective(self(x), y))

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


@pytest.mark.parametrize(("lr", "status"), [(0.05, "completed"), (50.0, "diverged")])
def test_a_module_of_ones_own_is_logged_guarded_and_recorded(cfg_factory, caplog, lr, status):
    from gdlab.train import train
    from tests.conftest import scalars

    cfg = cfg_factory(
        "module._target_=tests.test_extending.BareModule", f"optimizer.lr={lr}", "trainer.max_epochs=2",
        "data.n_samples=300", "trainer=cpu", "callbacks.pictures=null",
    )  # fmt: skip
    with caplog.at_level("INFO"):
        record = train(cfg)
    assert record["status"] == status
    if status == "diverged":  # the guard read train/loss from the module's returned loss
        assert record["error"].startswith("diverged at step ")
        return
    steps = [s for s, _ in scalars(cfg.paths.output_dir, "train/loss")]
    assert (
        steps == list(range(record["step"])) and record["step"] == 2 * 4
    )  # 210 training samples in batches of 64
    assert "diag/grad_norm" in record and "diag/loss_gap" not in record and "val/loss" in record
    assert "BareModule has no loss_fn attribute" in caplog.text
    assert "no test metrics: BareModule has no test_step" in caplog.text and "test/loss" not in record
