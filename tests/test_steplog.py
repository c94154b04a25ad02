"""Per-step logging without a per-step sync: every step reaches the loggers, at its own step, whatever
the flush interval; epoch metrics stay exact."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gdlab.steplog import StepLog
from gdlab.train import train


class Recorder:
    """The logger interface StepLog writes to: ``log_metrics(metrics, step)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict]] = []

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.calls.append((step, dict(metrics)))


def test_flush_writes_each_step_under_its_own_number_exactly():
    log, a, b = StepLog(), Recorder(), Recorder()
    losses = [torch.tensor(1 / 3), torch.tensor(2.5, dtype=torch.float64), torch.tensor(float("nan"))]
    for step, loss in enumerate(losses):
        log.open(step + 10, epoch=step // 2, values={"train/loss": loss})
    log.add({"extra": torch.tensor([7.0]), "lr": 0.1})  # attaches to the latest step (12)
    assert len(log) == 3
    latest = log.flush([a, b])
    assert len(log) == 0 and a.calls == b.calls
    assert [s for s, _ in a.calls] == [10, 11, 12]
    assert a.calls[0][1] == {"train/loss": float(torch.tensor(1 / 3)), "epoch": 0}  # the float32 value, exact
    assert a.calls[1][1]["train/loss"] == 2.5 and a.calls[1][1]["epoch"] == 0
    last = a.calls[2][1]
    assert (
        last["epoch"] == 1
        and last["extra"] == 7.0
        and last["lr"] == 0.1
        and last["train/loss"] != last["train/loss"]
    )
    assert latest["extra"] == 7.0 and "epoch" not in latest
    assert log.flush([a]) == {} and len(a.calls) == 3  # nothing pending: nothing written


def test_add_needs_an_open_step_and_scalars():
    log = StepLog()
    with pytest.raises(RuntimeError, match="before any training step"):
        log.add({"x": 1.0})
    log.open(0, 0, {})
    with pytest.raises(ValueError, match="'x' must be a scalar"):
        log.add({"x": torch.zeros(3)})


def _scalars(run_dir, tag):
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


@pytest.mark.parametrize("flush", [1, 7])
def test_every_step_reaches_tensorboard_and_epoch_metrics_stay_exact(cfg_factory, tmp_path, flush):
    # 1400 training samples in batches of 64: 21 full batches and one of 56 per epoch.
    cfg = cfg_factory(f"log_flush_steps={flush}", "trainer.max_epochs=2", "callbacks=none", "trainer=cpu")
    record = train(cfg)
    losses = _scalars(tmp_path, "train/loss")
    assert [s for s, _ in losses] == list(range(44)) == list(range(record["step"]))
    assert record["train/loss"] == pytest.approx(losses[-1][1], rel=1e-6)
    # train/mse is the epoch's MSE over all its samples: the batch losses weighted by batch size.
    last_epoch = [v for _, v in losses[22:]]
    expected = (sum(last_epoch[:21]) * 64 + last_epoch[21] * 56) / 1400
    assert record["train/mse"] == pytest.approx(expected, rel=1e-5)
    (written,) = _scalars(tmp_path, "train/mse")[-1:]
    assert written[1] == pytest.approx(expected, rel=1e-5)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


def test_flush_interval_changes_no_number(cfg_factory, tmp_path):
    runs = {}
    for flush in (1, 50):
        out = tmp_path / str(flush)
        cfg = cfg_factory(f"log_flush_steps={flush}", "trainer.max_epochs=1", "callbacks=none", "trainer=cpu")
        cfg.paths.output_dir = str(out)
        runs[flush] = (train(cfg), _scalars(out, "train/loss"))
    assert runs[1][1] == runs[50][1]
    for key in ("train/loss", "train/mse", "train/r2", "val/loss", "test/loss"):
        assert runs[1][0][key] == pytest.approx(runs[50][0][key], rel=1e-6), key


def test_a_run_stopped_mid_block_still_writes_its_last_steps(cfg_factory, tmp_path):
    cfg = cfg_factory("log_flush_steps=50", "trainer.max_steps=10", "callbacks=none", "trainer=cpu")
    record = train(cfg)
    assert record["step"] == 10
    assert [s for s, _ in _scalars(tmp_path, "train/loss")] == list(range(10))


@pytest.mark.parametrize("value", [0, -5, 2.5, "10", True])
def test_bad_flush_interval_is_a_clear_error(cfg_factory, value):
    cfg = cfg_factory("trainer=cpu", "logger=none")
    cfg.log_flush_steps = value
    with pytest.raises(ValueError, match=r"log_flush_steps=.* must be an integer >= 1"):
        train(cfg)
