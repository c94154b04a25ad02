"""Divergence is a result: stop at the first non-finite loss (or one far above its start) and say so.

The guard reads ``train/loss`` of every step from the run's step log (:mod:`gdlab.callbacks.steplog`) when
it is flushed, so it adds nothing to the per-step path and the step and loss it reports are exactly
those of the first bad step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import lightning as L

from gdlab.callbacks.linear import linear_view
from gdlab.callbacks.stability import StabilityBound, stability_bound
from gdlab.callbacks.steplog import StepLog, Written
from gdlab.errors import ArgumentError

log = logging.getLogger(__name__)


def lr_statement(
    lr: float, bound: StabilityBound | None, full_batch: bool, closed_form: bool = True, rule: str = ""
) -> str:
    """``lr = 0.4 = 0.80 x critical lr 0.5 (2/lambda_max) ...``: the current step size relative to
    the step rule's stability bound (:mod:`gdlab.callbacks.stability`)."""
    if bound is None:
        if closed_form:
            return f"lr = {lr:g} (no critical lr for {rule}: it is known for GD, heavy ball and Nesterov)"
        return f"lr = {lr:g} (critical lr unknown: it is known for the linear model on MSE)"
    ratio = lr / bound.critical_lr
    verdict = f"full-batch {bound.rule} " + ("converges" if ratio < 1 else "diverges")
    note = "" if full_batch else f" (the bound is for full-batch {bound.rule}; minibatch steps add noise)"
    return (
        f"lr = {lr:g} = {ratio:.2f} x critical lr {bound.critical_lr:.4g} ({bound.formula}): {verdict}{note}"
    )


@dataclass(frozen=True)
class Divergence:
    """Where and why a run diverged: the first bad optimizer step and one line for metrics.json."""

    step: int
    error: str


class DivergenceGuard(L.Callback):
    """Stops training at the first non-finite training loss, or one above ``max_loss_ratio`` times its start.

    It then holds a :class:`Divergence` in :attr:`diverged`, which ``gdlab.train`` writes to
    ``metrics.json`` as ``"status": "diverged"``. Its line names the step, the loss, the learning rate
    of that moment (under a schedule, the scheduled one) and, when the closed form applies and the step
    rule has a stability bound (:mod:`gdlab.callbacks.stability`), the critical learning rate. Before
    training it logs where ``optimizer.lr`` sits relative to the critical one, and again when a schedule
    takes it across. It acts when the step log is flushed (every ``log_flush_steps`` steps and at each
    epoch's end).

    Args:
        max_loss_ratio: a finite loss above this multiple of its start also counts as divergence
            (``null``: only non-finite losses do). The start is the largest loss of the first
            ``start_steps`` steps, so one lucky minibatch does not set a tiny baseline.
        start_steps: how many first steps define the start.
    """

    def __init__(self, max_loss_ratio: float | None = 100.0, start_steps: int = 5) -> None:
        if max_loss_ratio is not None and not (
            isinstance(max_loss_ratio, (int, float))
            and not isinstance(max_loss_ratio, bool)
            and max_loss_ratio > 1
        ):
            raise ArgumentError(
                "max_loss_ratio",
                f"Invalid max_loss_ratio: {max_loss_ratio!r} (must be a number > 1, or None to stop only at "
                "non-finite losses)",
            )
        if isinstance(start_steps, bool) or not isinstance(start_steps, int) or start_steps < 1:
            raise ArgumentError(
                "start_steps", f"Invalid start_steps: {start_steps!r} (must be an integer >= 1)"
            )
        self.max_loss_ratio = max_loss_ratio
        self.start_steps = start_steps
        self.critical_lr: float | None = None  # of the configured step rule; None where it has none
        self.bound: StabilityBound | None = None
        self.diverged: Divergence | None = None
        self._trainer: L.Trainer | None = None
        self._seen = 0  # losses that went into the start so far
        self._start = 0.0
        self._above: bool | None = None  # the current lr is above the critical one (stated when it changes)
        self._has_closed_form = False

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer, self.diverged, self._seen, self._start = trainer, None, 0, 0.0
        step_log = StepLog.of(trainer, self)
        if self.read not in step_log.readers:
            step_log.readers.append(self.read)
        view = linear_view(trainer, pl_module)
        self.bound, self.critical_lr, self._above = None, None, None
        if trainer.optimizers:
            optimizer = trainer.optimizers[0]
            self._has_closed_form = view is not None
            if view is not None:
                self.bound = stability_bound(optimizer, view.reference.critical_lr)
                self.critical_lr = self.bound.critical_lr if self.bound is not None else None
            self._state_lr(trainer, log.info)

    def _state_lr(self, trainer: L.Trainer, say) -> None:
        """Log where the current lr sits relative to the critical one."""
        lr = self._lr(trainer)
        self._above = None if self.critical_lr is None else lr >= self.critical_lr
        full_batch = getattr(trainer.datamodule, "batch_size", 0) is None
        rule = type(trainer.optimizers[0]).__name__
        say(lr_statement(lr, self.bound, full_batch, closed_form=self._has_closed_form, rule=rule))

    @staticmethod
    def _lr(trainer: L.Trainer) -> float:
        return float(trainer.optimizers[0].param_groups[0]["lr"])

    def _first_bad(self, rows: list[Written]) -> tuple[int, float] | None:
        """``(step, loss)`` of the first step in ``rows`` whose loss is non-finite or too far above the start."""
        for row in rows:
            value = row.values.get("train/loss")
            if value is None:
                continue
            if not math.isfinite(value):
                return row.step, value
            if self._seen < self.start_steps:  # the start: the largest of the first losses
                self._start = max(self._start, value)
                self._seen += 1
            elif (
                self.max_loss_ratio is not None
                and self._start > 0
                and value > self.max_loss_ratio * self._start
            ):
                return row.step, value
        return None

    def read(self, rows: list[Written]) -> None:
        """A step-log reader: called with every flushed block of steps."""
        trainer = self._trainer
        if trainer is None or self.diverged is not None:
            return
        if self._above is not None and (self._lr(trainer) >= self.critical_lr) != self._above:
            self._state_lr(trainer, log.warning)  # a schedule took the lr across the critical one
        bad = self._first_bad(rows)
        # Under DDP every process reads the same blocks; all stop if any diverged.
        if not trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            return
        if bad is None:
            step, what = rows[-1].step, "train/loss diverged on another process"
        else:
            step, loss = bad
            if math.isfinite(loss):
                what = f"train/loss = {loss:.4g}, {loss / self._start:.3g} x its start {self._start:.4g}"
            else:
                what = f"train/loss = {loss}"
        lr = self._lr(trainer)
        if self.critical_lr is not None:
            lr_part = f"lr = {lr:g} = {lr / self.critical_lr:.2f} x critical lr {self.critical_lr:.4g}"
            fix = f"below {self.critical_lr:.4g}"
        else:
            lr_part, fix = f"lr = {lr:g} (critical lr unknown for this model)", "(e.g. 10x smaller)"
        self.diverged = Divergence(step, f"diverged at step {step}: {what}; {lr_part}; lower lr {fix}")
        log.warning(self.diverged.error)
        trainer.should_stop = True  # (trainer.min_epochs / min_steps, when set, keep Lightning training)
