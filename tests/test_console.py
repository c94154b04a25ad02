"""What a run prints: the config as one line (all of it with print_config=full), a line per epoch where
the output is not a terminal, Lightning's lines once, and no upsell or deprecation noise."""

from __future__ import annotations

import json
import logging
import re
import sys

import pytest
from hydra.utils import instantiate

from gdlab.callbacks import ProgressBar
from gdlab.train import train
from tests.conftest import make_cfg, train_in_process

TINY = ("data.n_samples=200", "trainer=cpu", "logger=none", "callbacks.pictures=null", "trainer.max_epochs=3")


def test_the_config_is_one_line_of_overrides_unless_asked_for_in_full(monkeypatch, capsys, tmp_path):
    assert train_in_process(monkeypatch, *TINY, "model=mlp", f"paths.root={tmp_path}/a") == 0
    printed = capsys.readouterr().out
    (run_dir,) = (tmp_path / "a" / "runs").iterdir()
    lines = printed.splitlines()
    (line,) = [line for line in lines if " - overrides: " in line]
    assert lines[lines.index(line) - 1].endswith(f"run directory: {run_dir}")
    assert line.split(" - ", 1)[1].startswith("overrides: data.n_samples=200 trainer=cpu logger=none")
    assert "model=mlp" in line and "print_config=full" in line
    assert "every setting: config.yaml in the run directory" in line
    assert line in (run_dir / "train.log").read_text()
    assert "hidden_sizes" not in printed and "hidden_sizes" in (run_dir / "config.yaml").read_text()

    assert (
        train_in_process(monkeypatch, *TINY, "model=mlp", "print_config=full", f"paths.root={tmp_path}/b")
        == 0
    )
    printed = capsys.readouterr().out
    assert "hidden_sizes" in printed and printed.index("data:") < printed.index("model:")
    (run_dir,) = (tmp_path / "b" / "runs").iterdir()
    assert "print_config" not in run_dir.name  # a display setting, not part of what the run computes


def test_print_config_takes_only_its_values(monkeypatch, capsys, tmp_path):
    assert train_in_process(monkeypatch, *TINY, "print_config=yes", f"paths.root={tmp_path}") == 1
    err = capsys.readouterr().err
    assert "error: print_config=yes must be one of overrides, full, none: pass e.g. print_config=full" in err


def test_without_a_terminal_one_line_per_epoch_with_the_losses(caplog, tmp_path):
    with caplog.at_level(logging.INFO):
        record = train(make_cfg(tmp_path, *TINY))
    lines = [r.getMessage() for r in caplog.records if r.name == "gdlab.callbacks.progress"]
    assert [line.split(" (")[0] for line in lines] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    last = re.fullmatch(
        r"epoch 3/3 \((\d+) steps\): train/loss=(\S+), val/loss=(\S+) \(\d+\.\d\d s\)", lines[-1]
    )
    assert last, lines[-1]
    assert int(last[1]) == record["step"]
    assert float(last[2]) == pytest.approx(record["train/loss"], rel=1e-3)  # the epoch's last step
    assert float(last[3]) == pytest.approx(record["val/loss"], rel=1e-3)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"
    # the data's true parameters, at 6 significant digits
    (truth,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("true parameters")]
    b = float(re.search(r"'b': (\S+)}", truth)[1])
    assert len(re.sub(r"[-.]", "", str(b)).lstrip("0")) <= 6
    exact = instantiate(make_cfg(tmp_path, *TINY).data).true_params()["b"]
    assert b == pytest.approx(float(exact), rel=1e-5)


def test_in_a_terminal_the_bar_and_no_epoch_lines(caplog, capsys, tmp_path):
    cfg = make_cfg(tmp_path, *TINY, "callbacks.progress_bar.bar=true")
    with caplog.at_level(logging.INFO):
        train(cfg)
    assert not [r for r in caplog.records if r.name == "gdlab.callbacks.progress"]
    assert "Epoch 2: 100%" in capsys.readouterr().out  # Lightning's own tqdm bar


def test_where_the_output_goes_decides_by_default(monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert ProgressBar().bar is True
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert ProgressBar().bar is False
