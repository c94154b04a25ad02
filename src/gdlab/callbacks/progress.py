"""Progress that suits where the output goes: Lightning's bar in a terminal, one log line per epoch in a
file or a pipe (CI, ``nohup``, a log), where a redrawn bar writes hundreds of lines and runs into the log's."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from gdlab.data.batches import Block, InMemoryBatches
from gdlab.steplog import StepLog

log = logging.getLogger(__name__)


class ProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` when ``bar`` (default: standard output is a terminal); otherwise a line per
    epoch: ``epoch 4/20 (88 steps): train/loss=0.0123, val/loss=0.0104 (0.05 s)``."""

    def __init__(
        self, refresh_rate: int = 10, process_position: int = 0, leave: bool = False, bar: bool | None = None
    ) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=leave)
        self.bar = sys.stdout.isatty() if bar is None else bar
        self._epoch_start = 0.0
        self._pending: tuple[str, dict[str, Any], str, L.LightningModule] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.bar:
            self.disable()

    @property
    def total_train_batches(self) -> int | float:
        """Batches (optimizer steps) of an epoch, also where a training_step takes a block of them."""
        loader = self.trainer.train_dataloader
        if isinstance(loader, InMemoryBatches) and loader.steps_per_call > 1:
            total = loader.n_batches
            max_steps = self.trainer.max_steps
            if self.trainer.max_epochs == -1 and max_steps is not None and max_steps > 0:
                return min(total, max_steps - self.trainer.global_step)
            return total
        return super().total_train_batches

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, Block):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        bar = self.train_progress_bar
        if self.bar and bar is not None and not bar.disable:  # a block: the bar moves to its last batch
            bar.n = batch.stop
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._write_pending(trainer)
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.bar and trainer.is_global_zero:
            # Written once the module has flushed this epoch's steps (its hook runs after the callbacks'):
            # at the next epoch's start, or at the end of fit.
            seconds = time.perf_counter() - self._epoch_start
            epoch = f"epoch {trainer.current_epoch + 1}"  # counted from 1, as metrics.json's "epoch"
            if trainer.max_epochs is not None and trainer.max_epochs > 0:
                epoch += f"/{trainer.max_epochs}"
            metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
            self._pending = (
                f"{epoch} ({trainer.global_step} steps)",
                metrics,
                f"({seconds:.2f} s)",
                pl_module,
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_end(trainer, pl_module)
        self._write_pending(trainer)

    def _write_pending(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        head, metrics, took, pl_module = self._pending
        self._pending = None
        values: dict[str, Any] = {}
        step_log = getattr(pl_module, "step_log", None)
        if isinstance(step_log, StepLog) and "train/loss" in step_log.latest:
            values["train/loss"] = step_log.latest["train/loss"]
        values.update(metrics)
        log.info("%s: %s %s", head, ", ".join(f"{k}={_short(v)}" for k, v in values.items()), took)


def _short(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)
