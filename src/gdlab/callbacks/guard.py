"""Divergence is a result: stop at the first non-finite loss (or one far above its start) and say so.

Each step's loss stays on the device in a list; every ``check_every_n_steps`` steps and at each
epoch's end the block is read back at once (one host sync) and scanned, so the per-step path has no
sync and the recorded step and loss are exactly those of the first bad step.
"""

from __future__ import annotations

import logging
import math
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
        self._losses: list[Tensor] = []  # this block's losses, still on the device
        self._steps: list[int] = []
        self._seen = 0  # losses that went into the start so far
        self._start = 0.0

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

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, Tensor):
            return
        # The per-step cost is one list append; the step is the optimizer step just taken (train/loss's x).
        self._losses.append(loss.detach())
        self._steps.append(trainer.global_step - 1)
        if len(self._losses) >= self.check_every_n_steps:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _first_bad(self) -> tuple[int, float] | None:
        """Read the block back (one host sync) and return ``(step, loss)`` of its first bad step."""
        if not self._losses:
            return None
        values = torch.stack(self._losses).double().cpu().tolist()
        steps, self._losses, self._steps = self._steps, [], []
        for step, value in zip(steps, values, strict=True):
            if not math.isfinite(value):
                return step, value
            if self._seen < self.start_steps:  # the start: the largest of the first losses
                self._start = max(self._start, value)
                self._seen += 1
            elif (
                self.max_loss_ratio is not None
                and self._start > 0
                and value > self.max_loss_ratio * self._start
            ):
                return step, value
        return None

    def _check(self, trainer: L.Trainer) -> None:
        if self.run_status is not None:
            return
        bad = self._first_bad()
        # Under DDP every process checks at the same steps; all stop if any diverged.
        if not trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            return
        if bad is None:
            step, what = trainer.global_step - 1, "train/loss diverged on another process"
        else:
            step, loss = bad
            if math.isfinite(loss):
                what = f"train/loss = {loss:.4g}, {loss / self._start:.3g} x its start {self._start:.4g}"
            else:
                what = f"train/loss = {loss}"
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
