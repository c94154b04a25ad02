"""Progress that suits where the output goes: Lightning's bar in a terminal, one log line per epoch in a
file or a pipe (CI, ``nohup``, a log), where a redrawn bar writes hundreds of lines and runs into the log's."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from gdlab.callbacks.steplog import StepLog

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
        self._pending: tuple[str, str, L.LightningModule] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if not self.bar:
            self.disable()

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """Lightning's progress-bar values, with the latest ``train/loss`` the step log has written."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        step_log = next((c for c in trainer.callbacks if isinstance(c, StepLog)), None)
        if step_log is not None and "train/loss" in step_log.latest:
            metrics = {"train/loss": step_log.latest["train/loss"], **metrics}
        if step_log is not None and step_log.members:  # several jobs at once (gdlab.vectorized)
            training = sum(last is None for last in step_log.last_step)
            losses = [m["train/loss"] for m in step_log.member_latest if "train/loss" in m]
            metrics = {"jobs training": f"{training}/{step_log.members}", **metrics}
            if losses:
                metrics["train/loss min"] = min(losses)
        return metrics

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # A run resumed mid-epoch starts without on_train_epoch_start: its first epoch is timed from here.
        self._epoch_start = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._write_pending(trainer)
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if not self.bar and trainer.is_global_zero:
            # Written once the step log has flushed this epoch's steps (its hook may run after this one):
            # at the next epoch's start, or at the end of fit.
            seconds = time.perf_counter() - self._epoch_start
            epoch = f"epoch {trainer.current_epoch + 1}"  # counted from 1, as metrics.json's "epoch"
            if trainer.max_epochs is not None and trainer.max_epochs > 0:
                epoch += f"/{trainer.max_epochs}"
            self._pending = (f"{epoch} ({trainer.global_step} steps)", f"({seconds:.2f} s)", pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_fit_end(trainer, pl_module)
        self._write_pending(trainer)

    def _write_pending(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        head, took, pl_module = self._pending
        self._pending = None
        values = self.get_metrics(trainer, pl_module)
        log.info("%s: %s %s", head, ", ".join(f"{k}={_short(v)}" for k, v in values.items()), took)


def _short(value: Any) -> str:
    if hasattr(value, "item"):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)
