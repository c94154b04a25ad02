"""Divergence is a result: stop at the first non-finite loss (or one far above its start) and say so.

The guard reads ``train/loss`` of every step from the run's step log (:mod:`gdlab.callbacks.steplog`) when
it is flushed, so it adds nothing to the per-step path and the step and loss it reports are exactly
those of the first bad step. A module that trains several members at once (:mod:`gdlab.vectorized`) is
watched member by member: a member that diverges stops there, the others go on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

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
    training it logs where the learning rate sits relative to the critical one, and again when a schedule
    takes it across. It acts when the step log is flushed (every ``log_flush_steps`` steps and at each
    epoch's end).

    With a module of several members (its ``members`` attribute, :mod:`gdlab.vectorized`), each member is
    watched on its own train/loss: one that diverges is stopped by ``pl_module.stop_member(i)`` and its
    :class:`Divergence` kept in :attr:`member_diverged`.

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
        self.diverged: Divergence | None = None
        self.member_diverged: list[Divergence | None] = []
        self._trainer: L.Trainer | None = None
        self._module: L.LightningModule | None = None
        self._watches: list[_Watch] = []
        self._has_closed_form = False

    @property
    def critical_lr(self) -> float | None:
        """The critical lr of the configured step rule (the first member's); None where it has none."""
        return self._watches[0].critical_lr if self._watches else None

    @property
    def bound(self) -> StabilityBound | None:
        return self._watches[0].bound if self._watches else None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer, self._module, self.diverged = trainer, pl_module, None
        step_log = StepLog.of(trainer, self)
        if self.read not in step_log.readers:
            step_log.readers.append(self.read)
        members = getattr(pl_module, "members", None)
        self.member_diverged = [None] * (members or 0)
        self._watches = [_Watch() for _ in range(members or 1)]
        if not trainer.optimizers:
            return
        view = linear_view(trainer, pl_module.member_view(0) if members else pl_module)
        self._has_closed_form = view is not None
        for i, watch in enumerate(self._watches):
            if view is not None:
                watch.bound = stability_bound(self._optimizer(i), view.reference.critical_lr)
                watch.critical_lr = watch.bound.critical_lr if watch.bound is not None else None
            self._state_lr(i, log.info)

    def _optimizer(self, member: int) -> Any:
        """The step rule of ``member`` (a stand-in of its own with members): its lr, its type."""
        if getattr(self._module, "members", None):
            return self._module.member_optimizer(member)
        return self._trainer.optimizers[0]

    def _lr(self, member: int) -> float:
        return float(self._optimizer(member).param_groups[0]["lr"])

    def _say(self, member: int, say: Any, text: str) -> None:
        if getattr(self._module, "members", None):
            say("%s: %s", self._module.member_name(member), text, extra={"gdlab_member": member})
        else:
            say(text)

    def _state_lr(self, member: int, say: Any) -> None:
        """Log where the current lr sits relative to the critical one."""
        trainer, watch = self._trainer, self._watches[member]
        lr = self._lr(member)
        watch.above = None if watch.critical_lr is None else lr >= watch.critical_lr
        full_batch = getattr(trainer.datamodule, "batch_size", 0) is None
        rule = type(self._optimizer(member)).__name__
        statement = lr_statement(lr, watch.bound, full_batch, closed_form=self._has_closed_form, rule=rule)
        self._say(member, say, statement)

    def _first_bad(self, watch: _Watch, losses: list[tuple[int, float | None]]) -> tuple[int, float] | None:
        """``(step, loss)`` of the first step whose loss is non-finite or too far above the start."""
        for step, value in losses:
            if value is None:
                continue
            if not math.isfinite(value):
                return step, value
            if watch.seen < self.start_steps:  # the start: the largest of the first losses
                watch.start = max(watch.start, value)
                watch.seen += 1
            elif (
                self.max_loss_ratio is not None
                and watch.start > 0
                and value > self.max_loss_ratio * watch.start
            ):
                return step, value
        return None

    def read(self, rows: list[Written]) -> None:
        """A step-log reader: called with every flushed block of steps."""
        if self._trainer is None:
            return
        if rows and rows[0].members is not None:
            self._read_members(rows)
            return
        trainer, watch = self._trainer, self._watches[0]
        if self.diverged is not None:
            return
        if watch.above is not None and (self._lr(0) >= watch.critical_lr) != watch.above:
            self._state_lr(0, log.warning)  # a schedule took the lr across the critical one
        bad = self._first_bad(watch, [(row.step, row.values.get("train/loss")) for row in rows])
        # Under DDP every process reads the same blocks; all stop if any diverged.
        if not trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            return
        if bad is None:
            self.diverged = Divergence(rows[-1].step, self._error(0, rows[-1].step, None))
        else:
            self.diverged = Divergence(bad[0], self._error(0, *bad))
        log.warning(self.diverged.error)
        trainer.should_stop = True  # (trainer.min_epochs / min_steps, when set, keep Lightning training)

    def _read_members(self, rows: list[Written]) -> None:
        """Each member on its own losses; one that diverges stops, the others go on."""
        module = self._module
        for i, watch in enumerate(self._watches):
            if self.member_diverged[i] is not None or not module.is_active(i):
                continue
            bad = self._first_bad(watch, [(row.step, row.members[i].get("train/loss")) for row in rows])
            if bad is None:
                continue
            self.member_diverged[i] = Divergence(bad[0], self._error(i, *bad))
            self._say(i, log.warning, self.member_diverged[i].error)
            module.stop_member(i, self._trainer)

    def _error(self, member: int, step: int, loss: float | None) -> str:
        watch = self._watches[member]
        if loss is None:
            what = "train/loss diverged on another process"
        elif math.isfinite(loss):
            what = f"train/loss = {loss:.4g}, {loss / watch.start:.3g} x its start {watch.start:.4g}"
        else:
            what = f"train/loss = {loss}"
        lr, critical = self._lr(member), watch.critical_lr
        if critical is not None:
            lr_part = f"lr = {lr:g} = {lr / critical:.2f} x critical lr {critical:.4g}"
            fix = f"below {critical:.4g}"
        else:
            lr_part, fix = f"lr = {lr:g} (critical lr unknown for this model)", "(e.g. 10x smaller)"
        return f"diverged at step {step}: {what}; {lr_part}; lower lr {fix}"


@dataclass
class _Watch:
    """What the guard follows of one run (or one member): its start, the stated lr side, its bound."""

    seen: int = 0  # losses that went into the start so far
    start: float = 0.0
    above: bool | None = None  # the current lr is above the critical one (stated when it changes)
    bound: StabilityBound | None = None
    critical_lr: float | None = None  # of the configured step rule; None where it has none
