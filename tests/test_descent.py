"""Gradient descent through the real training path (composed config -> gdlab.train.train) against the
closed form: the critical learning rate, the per-step diagnostics and the divergence guard."""

import itertools
import json
import logging
import math

import pytest
import torch
from hydra.utils import instantiate

from gdlab import analysis
from gdlab.callbacks import DivergenceGuard, GradientDiagnostics
from gdlab.errors import ArgumentError
from gdlab.train import task, train
from tests.conftest import scalars

FULL_BATCH = ["data.batch_size=null", "trainer=cpu", "data.n_samples=300", "callbacks.pictures=null"]


def _reference(cfg):
    return instantiate(cfg.data).closed_form()


def _with_lr(cfg_factory, ratio, *overrides):
    """A full-batch config whose optimizer.lr is ``ratio`` x the data's critical learning rate."""
    cfg = cfg_factory(*FULL_BATCH, *overrides)
    critical = _reference(cfg).critical_lr
    return cfg_factory(*FULL_BATCH, *overrides, f"optimizer.lr={ratio * critical!r}"), critical


def test_lr_0_9_x_critical_reaches_the_closed_form_loss(cfg_factory, tmp_path, caplog):
    cfg, critical = _with_lr(cfg_factory, 0.9, "data.n_features=2", "trainer.max_epochs=60", "logger=none")
    with caplog.at_level(logging.INFO, logger="gdlab"):
        returned = task(cfg)  # what a sweeper gets
    record = json.loads((tmp_path / "metrics.json").read_text())
    ref = _reference(cfg)
    assert record["status"] == "completed" and returned == record["val/loss"]
    # train/loss of the last step is the full training loss: it must sit on the least-squares loss.
    assert record["train/loss"] / ref.loss <= 1.001, (record["train/loss"], ref.loss)
    assert record["diag/loss_gap"] <= 1e-3 * ref.loss
    assert f"= 0.90 x critical lr {critical:.4g} (2/lambda_max): full-batch GD converges" in caplog.text


def test_lr_1_1_x_critical_diverges_and_metrics_json_says_so(cfg_factory, tmp_path):
    cfg, critical = _with_lr(cfg_factory, 1.1, "data.n_features=2", "trainer.max_epochs=300", "logger=none")
    assert task(cfg) is None  # a sweeper gets no value from a diverged run (optuna: a failed trial)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["status"] == "diverged" and isinstance(on_disk["val/loss"], float)
    assert 0 < on_disk["step"] < 100 and on_disk["epoch"] < 300  # stopped early, not at max_epochs
    error = on_disk["error"]
    assert f"diverged at step {on_disk['step']}: train/loss = " in error
    assert f"lr = {cfg.optimizer.lr:g} = 1.10 x critical lr {critical:.4g}" in error
    assert "\n" not in error and "test/loss" not in on_disk  # one line; no test on diverged weights


def test_guard_stops_at_the_first_non_finite_loss(cfg_factory, tmp_path):
    """With the ratio check off, 3 x critical runs until float32 overflows: the step reported is the first
    step whose logged train/loss is not finite."""
    cfg, _ = _with_lr(
        cfg_factory,
        3.0,
        "data.n_features=1",
        "trainer.max_epochs=500",
        "callbacks.divergence_guard.max_loss_ratio=null",
        "callbacks.diagnostics=null",
    )
    record = train(cfg)
    assert record["status"] == "diverged"
    assert "train/loss = inf" in record["error"] or "train/loss = nan" in record["error"]
    losses = dict(scalars(tmp_path, "train/loss"))
    step = record["step"]
    assert not math.isfinite(losses[step]) and all(math.isfinite(losses[s]) for s in range(step))
    assert max(losses) < step + 10  # full batch: the guard reads every epoch's step at the epoch's end


def test_diagnostics_are_the_analytic_quantities(cfg_factory, tmp_path):
    """Full-batch GD from w = b = 0.5 on one feature: every logged diagnostic equals its formula."""
    cfg = cfg_factory(*FULL_BATCH, "data.n_features=1", "model.init=0.5", "trainer.max_epochs=8")
    record = train(cfg)
    assert record["status"] == "completed"
    dm = instantiate(cfg.data)
    ref, truth = dm.closed_form(), dm.true_params()
    x, y = dm.splits["train"][0].double(), dm.splits["train"][1].double().squeeze(1)

    def series(tag):
        return [value for _, value in scalars(tmp_path, tag)]

    grad, gap, upd, lr = (
        series("diag/grad_norm"),
        series("diag/loss_gap"),
        series("diag/update_norm"),
        series("diag/lr"),
    )
    assert len(grad) == len(gap) == len(upd) == 8
    w0, b0 = torch.tensor([0.5], dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64)
    dw, db = analysis.mse_gradient(w0, b0, x, y)
    assert grad[0] == pytest.approx(math.hypot(dw.item(), db.item()), rel=1e-5)
    assert gap[0] == pytest.approx(analysis.mse_loss(w0, b0, x, y).item() - ref.loss, rel=1e-5)
    assert series("diag/dist_to_truth")[0] == pytest.approx(
        math.hypot(0.5 - truth["w"].item(), 0.5 - truth["b"].item()), rel=1e-5
    )
    w_star, b_star = ref.w.item(), ref.b.item()
    assert series("diag/dist_to_optimum")[0] == pytest.approx(
        math.hypot(0.5 - w_star, 0.5 - b_star), rel=1e-5
    )
    # PlainSGD: the update is lr x the gradient; the gap is train/loss (full batch) minus L*.
    assert lr == [pytest.approx(cfg.optimizer.lr)] * 8  # a number: written at each epoch's first step
    assert upd == pytest.approx([cfg.optimizer.lr * g for g in grad], rel=1e-5)
    assert gap == pytest.approx([v - ref.loss for v in series("train/loss")], rel=1e-3, abs=1e-6)
    assert all(a > b for a, b in itertools.pairwise(gap))  # lr < critical: the gap shrinks every step


def test_diagnostics_skip_the_closed_form_for_a_nonlinear_model(cfg_factory, tmp_path):
    cfg = cfg_factory(
        "model=mlp", "model.hidden_sizes=[8]", "trainer=cpu", "trainer.max_epochs=1", "data.n_samples=200"
    )
    record = train(cfg)
    assert record["diag/grad_norm"] > 0 and record["diag/update_ratio"] > 0
    assert not any(k in record for k in ("diag/loss_gap", "diag/dist_to_optimum", "diag/dist_to_truth"))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: GradientDiagnostics(every_n_steps=0),
            r"^Invalid every_n_steps: 0 \(must be an integer >= 1\)$",
        ),
        (
            lambda: DivergenceGuard(max_loss_ratio=0.5),
            r"^Invalid max_loss_ratio: 0\.5 \(must be a number > 1",
        ),
        (lambda: DivergenceGuard(start_steps=0), r"^Invalid start_steps: 0 \(must be an integer >= 1\)$"),
    ],
)
def test_bad_callback_settings_are_clear_errors(make, match):
    with pytest.raises(ArgumentError, match=match):
        make()


def test_closed_form_reference_is_least_squares_on_the_train_split():
    from gdlab.data import LinearDataModule

    dm = LinearDataModule(n_samples=200, n_features=3, batch_size=None)
    ref = dm.closed_form()
    x, y = (t.double() for t in dm.splits["train"])
    w, _, loss = analysis.least_squares(x, y.squeeze(1))
    torch.testing.assert_close(ref.w.squeeze(1), w)
    assert ref.loss == pytest.approx(loss.item(), rel=1e-12)
    assert ref.critical_lr == pytest.approx(analysis.critical_learning_rate(x).item(), rel=1e-12)
    assert dm.closed_form() is ref  # computed once


def test_callbacks_survive_fast_dev_run(cfg_factory):
    """fast_dev_run swaps the loggers for Lightning's dummy one (its experiment has no writer)."""
    record = train(cfg_factory("debug=fdr", "trainer=cpu", "data.n_features=1"))
    assert record["status"] == "completed" and record["step"] == 1
    assert "diag/loss_gap" in record


def test_nan_without_the_guard_is_diverged_not_completed(cfg_factory):
    """With callbacks=none there is no guard; a loss that ends non-finite is still recorded as diverged."""
    from gdlab.train import train as run

    record = run(cfg_factory("callbacks=none", "logger=none", "optimizer.lr=50", "trainer.max_epochs=3"))
    assert record["status"] == "diverged"
    assert "lower optimizer.lr" in record["error"]
    assert "test/loss" not in record  # a diverged run is not tested
