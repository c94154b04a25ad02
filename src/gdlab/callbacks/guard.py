"""Divergence is a result: stop at the first non-finite loss (or one far above its start) and say so.

The check runs on the device every step (``isfinite`` and a comparison, remembered in tensors) and
reads the verdict back once every ``check_every_n_steps`` steps and at each epoch's end, so the
per-step path has no host sync; the recorded step and loss are those of the first bad step.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor

from gdlab.callbacks.linear import linear_view
from gdlab.errors import ConfigError

log = logging.getLogger(__name__)


def lr_statement(lr: float, critical_lr: float | None, full_batch: bool) -> str:
    """``optimizer.lr = 0.4 = 0.80 x critical lr 0.5 ...``: the step size relative to 2/lambda_max."""
    if critical_lr is None:
        return f"optimizer.lr = {lr:g} (critical lr unknown: it is known for the linear model on MSE)"
    ratio = lr / critical_lr
    verdict = "full-batch GD converges" if ratio < 1 else "full-batch GD diverges"
    note = "" if full_batch else " (the bound is for full-batch GD; minibatch steps add noise)"
    return (
        f"optimizer.lr = {lr:g} = {ratio:.2f} x critical lr {critical_lr:.4g} (2/lambda_max): {verdict}{note}"
    )


class DivergenceGuard(L.Callback):
    """Stops training at the first non-finite training loss, or one above ``max_loss_ratio`` times its start.

    It then sets ``run_status = {"status": "diverged", "step": ..., "error": "<one line>"}``, which
    ``gdlab.train`` writes to ``metrics.json``. The line names the step, the loss, ``optimizer.lr`` and,
    when the closed form applies, the critical learning rate. Before training it logs where
    ``optimizer.lr`` sits relative to the critical one.

    Args:
        max_loss_ratio: a finite loss above this multiple of its start also counts as divergence
            (``null``: only non-finite losses do). The start is the largest loss of the first
            ``start_steps`` steps, so one lucky minibatch does not set a tiny baseline.
        start_steps: how many first steps define the start.
        check_every_n_steps: how often the device-side verdict is read back (a host sync).
    """

    def __init__(
        self, max_loss_ratio: float | None = 100.0, start_steps: int = 5, check_every_n_steps: int = 10
    ) -> None:
        if max_loss_ratio is not None and not (
            isinstance(max_loss_ratio, (int, float)) and max_loss_ratio > 1
        ):
            raise ConfigError(
                f"callbacks.divergence_guard.max_loss_ratio={max_loss_ratio!r} must be a number > 1, "
                "or null to stop only at non-finite losses"
            )
        for name, value in (("start_steps", start_steps), ("check_every_n_steps", check_every_n_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"callbacks.divergence_guard.{name}={value!r} must be an integer >= 1")
        self.max_loss_ratio = max_loss_ratio
        self.start_steps = start_steps
        self.check_every_n_steps = check_every_n_steps
        self.critical_lr: float | None = None
        self.run_status: dict[str, Any] | None = None
        self._reset()

    def _reset(self) -> None:
        self._n = 0
        self._start: Tensor | None = None
        self._bad_step: Tensor | None = None  # -1 until the first bad step
        self._bad_loss: Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self.run_status = None
        view = linear_view(trainer, pl_module)
        self.critical_lr = view.reference.critical_lr if view is not None else None
        if trainer.optimizers:
            full_batch = getattr(trainer.datamodule, "batch_size", 0) is None
            log.info(lr_statement(self._lr(trainer), self.critical_lr, full_batch))

    @staticmethod
    def _lr(trainer: L.Trainer) -> float:
        return float(trainer.optimizers[0].param_groups[0]["lr"])

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, Tensor):
            return
        loss = loss.detach().float()
        step = trainer.global_step - 1  # the optimizer step just taken; train/loss's x in TensorBoard
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), device=loss.device)
            self._start = torch.zeros((), device=loss.device)
        bad = ~torch.isfinite(loss)
        if self._n < self.start_steps:
            self._start = torch.maximum(self._start, torch.where(bad, self._start, loss))
        elif self.max_loss_ratio is not None:
            bad = bad | ((self._start > 0) & (loss > self.max_loss_ratio * self._start))
        first = bad & (self._bad_step < 0)
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_loss = torch.where(first, loss, self._bad_loss)
        self._n += 1
        if self._n % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if self._bad_step is None or self.run_status is not None:
            return
        step = int(self._bad_step)  # the one host sync
        # Under DDP every process checks at the same steps; all stop if any diverged.
        if not trainer.strategy.reduce_boolean_decision(step >= 0, all=False):
            return
        if step < 0:
            step = trainer.global_step - 1
            what = "train/loss diverged on another process"
        elif torch.isfinite(self._bad_loss):
            loss, start = float(self._bad_loss), float(self._start)
            what = f"train/loss = {loss:.4g}, {loss / start:.3g} x its start {start:.4g}"
        else:
            what = f"train/loss = {float(self._bad_loss)}"
        lr = self._lr(trainer)
        if self.critical_lr is not None:
            lr_part = (
                f"optimizer.lr = {lr:g} = {lr / self.critical_lr:.2f} x critical lr {self.critical_lr:.4g}"
            )
        else:
            lr_part = f"optimizer.lr = {lr:g} (critical lr unknown for this model)"
        fix = f"below {self.critical_lr:.4g}" if self.critical_lr is not None else "(e.g. 10x smaller)"
        error = f"diverged at step {step}: {what}; {lr_part}; lower optimizer.lr {fix}"
        self.run_status = {"status": "diverged", "step": step, "error": error}
        log.warning(error)
        trainer.should_stop = True
        # Lightning keeps training until min_epochs/min_steps are met even when should_stop is set;
        # a diverged run has nothing left to learn, so lift them.
        trainer.fit_loop.min_epochs = 0
        trainer.fit_loop.epoch_loop.min_steps = None
