"""Step rules and schedules a user compares: each trains, resumes bitwise, logs the lr it used, and is
judged against the right stability bound; early stopping is a result; a sweep over optimizers compares them."""

import json
import math
import re
from pathlib import Path

import pytest
import torch

from gdlab.callbacks.stability import stability_bound
from gdlab.factory import build
from gdlab.optim import PlainSGD
from gdlab.train import task, train
from tests.conftest import make_cfg, scalars, train_in_process

# 210 training samples in batches of 64: 4 steps per epoch, 16 in all; last.ckpt every 3 steps.
TINY = (
    "trainer=cpu",
    "data.n_samples=300",
    "trainer.max_epochs=4",
    "callbacks.pictures=null",
    "callbacks.model_summary=null",
    "callbacks.progress_bar.bar=false",
    "callbacks.last_checkpoint.every_n_train_steps=3",
    "logger=none",
)
STEPS = 16

# Every optimizer and every scheduler option at least once (sgd with no schedule: tests/test_resume.py).
RULES = [
    ("momentum", "step", ("scheduler.step_size=1",)),
    ("nesterov", "cosine", ()),
    ("adam", "warmup_cosine", ()),
    ("adamw", "plateau", ("scheduler.patience=0", "scheduler.factor=0.9")),
    ("sgd", "step", ("scheduler.step_size=1",)),
]
IDS = ["momentum-step", "nesterov-cosine", "adam-warmup_cosine", "adamw-plateau", "sgd-step"]


def _ckpt(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["global_step"] == b["global_step"] == STEPS
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert state_a.keys() == state_b.keys()
    for index in state_a:
        for name, value in state_a[index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(state_b[index][name])), name
    assert a["optimizer_states"][0]["param_groups"] == b["optimizer_states"][0]["param_groups"]
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "scheduler", "extra"), RULES, ids=IDS)
def test_every_step_rule_trains_and_resumes_bitwise_after_a_crash(tmp_path, optimizer, scheduler, extra):
    run = (f"optimizer={optimizer}", f"scheduler={scheduler}", *extra, *TINY)
    reference = train(make_cfg(tmp_path / "uninterrupted", *run))
    assert reference["status"] == "completed"
    assert math.isfinite(reference["val/loss"]) and math.isfinite(reference["train/loss"])

    crashed = tmp_path / "crashed"
    crash = (
        "+callbacks.crash._target_=tests.crash.RaiseAtStep",
        "+callbacks.crash.step=11",
        "+callbacks.crash.rank=0",
    )
    with pytest.raises(RuntimeError, match="at step 11"):
        train(make_cfg(crashed, *run, *crash))
    assert (
        _ckpt(crashed)["global_step"] == 9
    )  # mid-epoch 3: the resume restores the schedule and the data order
    resumed = train(make_cfg(crashed, *run, f"resume={crashed}"))
    assert resumed["status"] == "completed"
    _assert_same_state(_ckpt(crashed), _ckpt(tmp_path / "uninterrupted"))
    assert resumed["test/loss"] == reference["test/loss"]


@pytest.mark.slow
def test_plateau_resumes_bitwise_from_an_epoch_end_checkpoint(tmp_path):
    """Lightning steps ReduceLROnPlateau after the epoch-end save: last.ckpt carries the step still to come,
    and the resumed run takes it (crashed at step 13, last.ckpt is the end of epoch 3, step 12)."""
    run = ("optimizer=adamw", "scheduler=plateau", "scheduler.patience=0", "scheduler.factor=0.9", *TINY)
    reference = train(make_cfg(tmp_path / "uninterrupted", *run))
    crashed = tmp_path / "crashed"
    crash = (
        "+callbacks.crash._target_=tests.crash.RaiseAtStep",
        "+callbacks.crash.step=13",
        "+callbacks.crash.rank=0",
    )
    with pytest.raises(RuntimeError, match="at step 13"):
        train(make_cfg(crashed, *run, *crash))
    assert _ckpt(crashed)["global_step"] == 12
    resumed = train(make_cfg(crashed, *run, f"resume={crashed}"))
    _assert_same_state(_ckpt(crashed), _ckpt(tmp_path / "uninterrupted"))
    assert resumed["test/loss"] == reference["test/loss"]


def test_sgd_is_still_plain_sgd_without_a_schedule(tmp_path):
    _, module, _ = build(make_cfg(tmp_path, "trainer=cpu", "logger=none"))
    assert type(module.configure_optimizers()) is PlainSGD  # no scheduler dict: the same step as before


def test_diag_lr_follows_the_schedule_step_by_step(tmp_path):
    """warmup_cosine over 6 epochs of 4 steps: diag/lr of each step against the closed form of LinearLR then
    CosineAnnealingLR, and against torch's schedulers stepped by hand."""
    lr, warmup, epochs, start = 0.05, 2, 6, 0.1
    overrides = ("scheduler=warmup_cosine", f"trainer.max_epochs={epochs}", "logger=tensorboard")
    train(make_cfg(tmp_path, *[o for o in TINY if o != "logger=none"], *overrides))
    written = dict(scalars(tmp_path, "diag/lr"))  # written at each epoch's first step and when it changes

    def closed_form(epoch: int) -> float:
        if epoch < warmup:
            return lr * (start + (1 - start) * epoch / warmup)
        return lr * (1 + math.cos(math.pi * (epoch - warmup) / (epochs - warmup))) / 2

    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    by_hand = torch.optim.lr_scheduler.SequentialLR(
        probe,
        [
            torch.optim.lr_scheduler.LinearLR(probe, start_factor=start, total_iters=warmup),
            torch.optim.lr_scheduler.CosineAnnealingLR(probe, T_max=epochs - warmup),
        ],
        milestones=[warmup],
    )
    for epoch in range(epochs):
        first_step = 4 * epoch
        assert written[first_step] == pytest.approx(closed_form(epoch), rel=1e-6, abs=1e-12)
        assert written[first_step] == pytest.approx(probe.param_groups[0]["lr"], rel=1e-6)
        probe.step()
        by_hand.step()
    assert sorted(written) == [4 * e for e in range(epochs)]  # constant within an epoch (interval: epoch)


@pytest.mark.parametrize(
    ("make", "factor"),
    [
        (lambda p, lr: PlainSGD(p, lr=lr), "GD"),
        (lambda p, lr: torch.optim.SGD(p, lr=lr, weight_decay=0.5), "GD"),
        (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9), "heavy ball"),
        (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.5, dampening=0.3), "heavy ball"),
        (lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, nesterov=True), "Nesterov"),
    ],
)
def test_the_stated_critical_lr_separates_convergence_from_divergence(make, factor):
    """A hand loop on L = lambda/2 w^2 with torch's own step: below the stated bound |w| shrinks, above it
    grows."""
    lam = 4.0
    bound = stability_bound(make([torch.zeros(1, requires_grad=True)], 0.1), 2 / lam)
    assert bound is not None and bound.rule == factor

    def final_w(lr: float) -> float:
        w = torch.ones(1, dtype=torch.float64)
        opt = make([w], lr)
        for _ in range(1000):
            w.grad = lam * w  # the gradient of L, by hand
            opt.step()
        return abs(w.item())

    assert final_w(0.9 * bound.critical_lr) < 1e-6
    assert not final_w(1.1 * bound.critical_lr) < 1e6  # grows without bound (or overflows)


def test_adaptive_rules_state_no_critical_lr(tmp_path, caplog):
    assert stability_bound(torch.optim.Adam([torch.zeros(1, requires_grad=True)]), 0.5) is None
    caplog.set_level("INFO")
    train(make_cfg(tmp_path, "optimizer=adam", *TINY, "trainer.max_epochs=1", "callbacks.diagnostics=null"))
    assert "lr = 0.01 (no critical lr for Adam" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (("optimizer=adam", "optimizer.lr=-1"), "optimizer.lr=-1: Invalid learning rate: -1"),
        (
            ("optimizer=adamw", "optimizer.betas=[0.9,2]"),
            "optimizer.betas=[0.9, 2]: Invalid beta parameter at index 1: 2",
        ),
        (
            ("optimizer=momentum", "optimizer.momentum=-1"),
            "optimizer.momentum=-1: Invalid momentum value: -1",
        ),
        (
            ("scheduler=step", "scheduler.gamma=abc"),
            "scheduler.gamma=abc must be a number: pass e.g. scheduler.gamma=0.1",
        ),
        (
            ("scheduler=warmup_cosine", "trainer.max_epochs=2"),
            "scheduler.total_epochs=2: Invalid total_epochs: 2 (must be an integer > warmup_epochs = 2)",
        ),
    ],
)
def test_bad_step_rule_settings_name_the_setting(tmp_path, overrides, line):
    with pytest.raises(ValueError) as caught:
        build(make_cfg(tmp_path, "trainer=cpu", "logger=none", *overrides))
    assert str(caught.value) == line


def test_early_stopping_is_a_result_with_its_reason(tmp_path):
    """A run that early stopping ends says so in metrics.json, is tested, and reports its metric."""
    cfg = make_cfg(
        tmp_path,
        *TINY,
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=100",  # no epoch improves by that much
        "callbacks.pictures=null",
    )
    returned = task(cfg)
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "stopped_early" and record["epoch"] == 2 and record["step"] == 8
    assert record["reason"].startswith("early stopping after epoch 2: ")
    assert "val/loss" in record["reason"]
    assert returned == record["val/loss"] and math.isfinite(record["test/loss"])


@pytest.mark.slow
def test_a_sweep_over_optimizers_writes_one_summary_comparing_them(tmp_path, monkeypatch):
    tiny = ("trainer=cpu", "data.n_samples=300", "trainer.max_epochs=4", "logger=none", "callbacks=none")
    code = train_in_process(monkeypatch, "-m", "optimizer=sgd,momentum,adam", f"paths.root={tmp_path}", *tiny)
    assert code == 0
    (sweep,) = (tmp_path / "multirun").iterdir()
    md = (sweep / "summary.md").read_text()
    assert "3 jobs, 3 configurations" in md
    assert "| optimizer | seeds | status | train/loss | val/loss | test/loss |" in md
    rows = [line for line in md.splitlines() if line.startswith(("| sgd ", "| momentum ", "| adam "))]
    assert len(rows) == 3 and all("| completed 1 |" in row for row in rows)


def test_the_guard_states_when_a_schedule_takes_the_lr_across_the_critical_one(tmp_path, caplog):
    """The lecture problem (critical lr 0.9507), warmed up from 0.1 to 1.2: below at the start, above at the
    end of the warm-up, and the divergence is blamed on the lr of that moment."""
    caplog.set_level("INFO")
    record = train(
        make_cfg(
            tmp_path,
            "experiment=lecture",
            "optimizer.lr=1.2",
            "scheduler=warmup_cosine",
            "scheduler.warmup_epochs=3",
            "trainer.max_epochs=200",  # the cosine stays above critical for about 60 epochs
            "callbacks.pictures=null",
            "logger=none",
            "log_flush_steps=1",
        )
    )
    assert "lr = 0.12 = 0.13 x critical lr 0.9507 (2/lambda_max): full-batch GD converges" in caplog.text
    crossed = [r.message for r in caplog.records if r.levelname == "WARNING" and "diverges" in r.message]
    assert crossed and re.match(r"lr = 1.2\d* = 1.26 x critical lr 0.9507 \(2/lambda_max\)", crossed[0])
    assert record["status"] == "diverged"  # blamed on the lr of its step, past the warm-up's peak:
    assert re.search(r"lr = 1.1\d* = 1.2\d x critical lr 0.9507", record["error"])
