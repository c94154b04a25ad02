"""conf/experiment: each composes, and its learning rate sits where its comment says relative to the critical one."""

import json

import pytest
from hydra.utils import instantiate

from tests.conftest import train_in_process

# experiment -> (optimizer.lr / critical lr, condition number range) as stated in the yaml comments
STATED = {
    "lecture": (0.11, (1.0, 2.0)),
    "diverge": (1.10, (1.0, 2.0)),
    "ill_conditioned": (0.90, (100.0, 200.0)),
}


@pytest.mark.parametrize("name", sorted(STATED))
def test_experiment_lr_is_the_stated_multiple_of_critical(cfg_factory, name):
    cfg = cfg_factory(f"experiment={name}")
    assert cfg.data.batch_size is None  # full batch: the critical learning rate is exact
    ref = instantiate(cfg.data).closed_form()
    ratio, (kappa_lo, kappa_hi) = STATED[name]
    assert cfg.optimizer.lr / ref.critical_lr == pytest.approx(ratio, abs=0.005)
    assert kappa_lo < ref.condition_number < kappa_hi


@pytest.mark.slow
def test_diverge_experiment_is_a_result_not_a_crash(monkeypatch, tmp_path):
    assert train_in_process(monkeypatch, "experiment=diverge", f"paths.root={tmp_path}", "trainer=cpu") == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "diverged" and record["step"] < 50
    log = (run_dir / "train.log").read_text()
    assert "lr = 1.046 = 1.10 x critical lr 0.9507 (2/lambda_max): full-batch GD diverges" in log
    assert record["error"] in log
    assert (run_dir / "plots" / "landscape_final.png").is_file()
