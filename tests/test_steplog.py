"""The one step-logging path: every per-step value reaches every logger through ``log_metrics``, each at its
own step, whatever the flush interval; derived values are computed per block; readers see what is written;
epoch metrics stay exact."""

import json
import math

import pytest
import torch

from gdlab.callbacks.steplog import StepLog
from gdlab.train import train
from tests.conftest import scalars


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
    log.add({"extra": torch.tensor([7.0])})  # attaches to the latest step (12)
    assert len(log) == 3
    written = log.flush([a, b])
    assert len(log) == 0 and a.calls == b.calls
    assert [s for s, _ in a.calls] == [10, 11, 12] == [w.step for w in written]
    # the float32 value exactly; "epoch" at the first step of each epoch only
    assert a.calls[0][1] == {"train/loss": float(torch.tensor(1 / 3)), "epoch": 0.0}
    assert a.calls[1][1] == {"train/loss": 2.5}
    last = a.calls[2][1]
    assert last["epoch"] == 1.0 and last["extra"] == 7.0 and math.isnan(last["train/loss"])
    assert log.latest["extra"] == 7.0 and "epoch" not in log.latest
    assert log.flush([a]) == [] and len(a.calls) == 3  # nothing pending: nothing written


def test_plain_numbers_are_written_when_they_change_and_at_each_epoch_start():
    log, out = StepLog(), Recorder()
    for step, (epoch, lr) in enumerate([(0, 0.1), (0, 0.1), (0, 0.05), (1, 0.05), (1, 0.05)]):
        log.open(step, epoch, {"train/loss": torch.tensor(float(step)), "lr": lr})
    log.flush([out])
    assert [(step, m.get("lr")) for step, m in out.calls] == [
        (0, 0.1),
        (1, None),
        (2, 0.05),
        (3, 0.05),
        (4, None),
    ]
    assert log.latest["lr"] == 0.05


def test_the_current_step_stays_pending_until_the_next_one_opens():
    """A callback may add to a step after the module's own end-of-step hook: those rows are not cut off."""
    log, out = StepLog(flush_every=2), Recorder()
    for step in range(3):
        log.open(step, 0, {"train/loss": torch.tensor(1.0)})
    assert log.due()
    log.flush([out], keep_current=True)
    assert [s for s, _ in out.calls] == [0, 1] and len(log) == 1
    log.add({"late": torch.tensor(5.0)})  # still step 2's
    log.flush([out])
    assert out.calls[-1] == (2, {"train/loss": 1.0, "late": 5.0})


def test_derived_values_are_computed_once_per_block_and_land_at_their_steps():
    log, out, blocks = StepLog(), Recorder(), []

    def columns(raw):
        blocks.append(raw.shape)
        return {"a/sum": raw.sum(dim=1), "a/max": raw.amax(dim=1)}

    log.derive("raw", columns)
    for step in range(4):
        log.open(step, 0, {"train/loss": torch.tensor(0.0)})
        if step != 2:  # a step without the raw value (e.g. every_n_steps > 1)
            log.add({"raw": torch.tensor([step, 10.0 * step])})
    log.flush([out])
    assert blocks == [torch.Size([3, 2])]  # one call for the whole block
    assert [(s, m.get("a/sum"), m.get("a/max")) for s, m in out.calls] == [
        (0, 0.0, 0.0),
        (1, 11.0, 10.0),
        (2, None, None),
        (3, 33.0, 30.0),
    ]


def test_readers_see_the_rows_before_the_loggers_and_reduce_applies_to_all_values():
    log, out, seen = StepLog(), Recorder(), []
    log.readers.append(lambda rows: seen.append([(r.step, r.values["train/loss"]) for r in rows]) or None)
    for step in range(3):
        log.open(step, 0, {"train/loss": torch.tensor(float(step))})
    log.flush([out], reduce=lambda block: block * 2)  # e.g. the mean over DDP processes
    assert seen == [[(0, 0.0), (1, 2.0), (2, 4.0)]]
    assert [m["train/loss"] for _, m in out.calls] == [0.0, 2.0, 4.0]


def test_add_needs_an_open_step_and_scalars():
    log = StepLog()
    with pytest.raises(RuntimeError, match="before any training step"):
        log.add({"x": 1.0})
    log.open(0, 0)
    with pytest.raises(ValueError, match="'x' must be a scalar"):
        log.add({"x": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"^Invalid flush_every: 0 \(must be an integer >= 1\)$"):
        StepLog(flush_every=0)


@pytest.mark.parametrize("flush", [1, 7])
def test_every_step_reaches_tensorboard_and_epoch_metrics_stay_exact(cfg_factory, tmp_path, flush):
    # 1400 training samples in batches of 64: 21 full batches and one of 56 per epoch.
    cfg = cfg_factory(f"log_flush_steps={flush}", "trainer.max_epochs=2", "callbacks=none", "trainer=cpu")
    record = train(cfg)
    losses = scalars(tmp_path, "train/loss")
    assert [s for s, _ in losses] == list(range(44)) == list(range(record["step"]))
    assert record["train/loss"] == pytest.approx(losses[-1][1], rel=1e-6)
    # train/mse is the epoch's MSE over all its samples: the batch losses weighted by batch size.
    last_epoch = [v for _, v in losses[22:]]
    expected = (sum(last_epoch[:21]) * 64 + last_epoch[21] * 56) / 1400
    assert record["train/mse"] == pytest.approx(expected, rel=1e-5)
    assert scalars(tmp_path, "train/mse")[-1][1] == pytest.approx(expected, rel=1e-5)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "completed"


def test_flush_interval_changes_no_number(cfg_factory, tmp_path):
    runs = {}
    for flush in (1, 50):
        out = tmp_path / str(flush)
        cfg = cfg_factory(f"log_flush_steps={flush}", "trainer.max_epochs=1", "trainer=cpu")
        cfg.paths.output_dir = str(out)
        runs[flush] = (train(cfg), {tag: scalars(out, tag) for tag in ("train/loss", "diag/grad_norm")})
    assert runs[1][1] == runs[50][1]
    for key in ("train/loss", "train/mse", "train/r2", "val/loss", "test/loss", "diag/loss_gap"):
        assert runs[1][0][key] == pytest.approx(runs[50][0][key], rel=1e-6), key


def test_a_run_stopped_mid_block_still_writes_its_last_steps(cfg_factory, tmp_path):
    cfg = cfg_factory("log_flush_steps=50", "trainer.max_steps=10", "trainer=cpu")
    record = train(cfg)
    assert record["step"] == 10
    assert [s for s, _ in scalars(tmp_path, "train/loss")] == list(range(10))
    assert [s for s, _ in scalars(tmp_path, "diag/grad_norm")] == list(range(10))


def test_one_event_file_per_run_with_fit_test_and_hparams(cfg_factory, tmp_path):
    """Lightning closes a logger after fit and after test; gdlab's logger keeps the whole run in one file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    train(cfg_factory("trainer.max_epochs=2", "data.n_samples=300", "trainer=cpu"))
    (events,) = tmp_path.glob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
    accumulator.Reload()
    assert {"train/loss", "diag/grad_norm", "val/loss", "test/loss"} <= set(accumulator.Tags()["scalars"])
    assert metadata.SESSION_START_INFO_TAG in accumulator.PluginTagToContent(metadata.PLUGIN_NAME)
