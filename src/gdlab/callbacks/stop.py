"""Stop signals during training end the run at a step boundary, where last.ckpt resumes bit for bit."""

from __future__ import annotations

import logging
import signal
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from gdlab.runs import signals

log = logging.getLogger(__name__)

# Under torchrun or SLURM, the processes decide together whether to stop every this many optimizer steps.
AGREE_EVERY = 10


class StopAtStepEnd(Callback):
    """While training, a stop signal (:mod:`gdlab.runs.signals`) ends the run at the end of the current
    optimizer step (under torchrun or SLURM within ``AGREE_EVERY`` steps, every process at the same
    one), where last.ckpt is a state ``resume`` continues bitwise.

    Lightning's own SIGTERM handler (registered for ``fit``) gives way to gdlab's while training: under
    DDP it broadcasts from inside the handler, and it stops after the step's bookkeeping."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signals.install()  # Lightning restores the handler it found (this one) when fit ends
        signals.defer(True)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        stop = signals.received() is not None
        if trainer.world_size > 1 and trainer.strategy.cluster_environment.creates_processes_externally:
            # torchrun or SLURM signal every process, each at its own point of the step: they agree on one
            # step to stop at (one that stopped alone would leave the others waiting), every AGREE_EVERY
            # steps (a collective operation costs about as much as a small step). Processes that Lightning
            # started are signalled through rank 0 only, which ends the others itself.
            if trainer.global_step % AGREE_EVERY:
                return
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            signals.stop_requested()  # raised now: a later signal is ignored while the run records its end
            signum = signals.received() or signal.SIGTERM
            log.info(
                "%s: stopping at the end of training step %d", signals.describe(signum), trainer.global_step
            )
            raise signals.Interrupted(signum)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        signals.defer(False)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        signals.defer(False)
