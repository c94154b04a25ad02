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

import pytest

from gdlab import entry
from tests.conftest import REPO_ROOT

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
            "mylab/callbacks.py", "conf/data/sine.yaml", "conf/model/tiny_mlp.yaml", "conf/loss/huber.yaml",
            "conf/optimizer/sign_sgd.yaml", "conf/experiment/sine_demo.yaml"} <= set(files)  # fmt: skip
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
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
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
        assert "mylab/weight_norm" in metrics and "val/loss" in metrics
        config = (run_dir / "config.yaml").read_text()
        for target in ("mylab.data.SineDataModule", "mylab.models.TinyMLP", "mylab.losses.HuberLoss",
                       "mylab.optim.SignSGD", "mylab.callbacks.WeightNorm"):  # fmt: skip
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
