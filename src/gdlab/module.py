"""GDModule: the one LightningModule. A network, a loss and an optimizer factory, all from config."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from gdlab.integrations.torch_module import FastPlainAttributes
from gdlab.metrics import build_metrics
from gdlab.steplog import StepLog

log = logging.getLogger(__name__)

STEPS_PER_CALL_KEY = "gdlab_steps_per_call"  # in every checkpoint (absent in older ones: 1)


class GDModule(FastPlainAttributes, L.LightningModule):
    """Trains ``net`` by minimising ``loss_fn`` with the optimizer built by ``optimizer(params)`` and, when
    given, the learning-rate schedule built by ``scheduler(optimizer)``, stepped as ``schedule`` says
    (Lightning's scheduler-dict keys: ``interval``, ``frequency``, ``monitor``).

    Nothing here is dataset-specific: the datamodule tells the ``task`` (which metrics to report)
    and ``num_outputs``. Only primitives are saved as hyperparameters (``task``, ``num_outputs``
    and the run's resolved ``config`` as a plain dict), so every checkpoint loads with
    ``torch.load(path, weights_only=True)``.

    Per-step values go through :attr:`step_log` (``train/loss`` here, ``diag/*`` from callbacks):
    written to every logger under their own step, ``log_flush_steps`` steps at a time. (The
    ``FastPlainAttributes`` mixin spares the ~47 plain attributes Lightning sets per step torch's checks.)

    With ``steps_per_call > 1`` (:mod:`gdlab.blocks`; ``build`` chooses it) each ``training_step`` gets a
    block of that many batches and takes one optimizer step per batch: the same weights, bit for bit.
    """

    def __init__(
        self,
        net: nn.Module,
        loss_fn: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
        schedule: dict[str, Any] | None = None,
        task: str = "regression",
        num_outputs: int = 1,
        config: dict[str, Any] | None = None,
        log_flush_steps: int = 50,
        steps_per_call: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters("task", "num_outputs", "config")
        self.net = net
        self.loss_fn = loss_fn
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.schedule = dict(schedule or {})
        metrics = build_metrics(task, num_outputs)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.step_log = StepLog(log_flush_steps)
        # (predictions, targets) of the training steps not yet flushed: train/* metrics update once a block.
        self._train_batches: list[tuple[Tensor, Tensor]] = []
        self.set_steps_per_call(steps_per_call)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def set_steps_per_call(self, steps_per_call: int) -> None:
        """Take ``steps_per_call`` optimizer steps per ``training_step`` (see :mod:`gdlab.blocks`): 1 is
        Lightning's automatic optimization; more is manual optimization over a block of that many batches."""
        if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int) or steps_per_call < 1:
            raise ValueError(f"Invalid steps_per_call: {steps_per_call!r} (must be an integer >= 1)")
        self.steps_per_call = steps_per_call
        self.automatic_optimization = steps_per_call == 1

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        if self.automatic_optimization:
            return self._train_on(batch)
        return self._train_on_block(batch)

    def _train_on(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        preds = self.net(x)
        loss = self.loss_fn(preds, y)
        # The per-step path: no self.log, no metric update, no host sync (see flush_steps).
        self.step_log.open(self.global_step, self.current_epoch, {"train/loss": loss})
        self._train_batches.append((preds.detach(), y))
        return loss

    def _train_on_block(self, block: Iterable[tuple[Tensor, Tensor]]) -> Tensor | None:
        """One optimizer step per batch of the block, in the order of Lightning's automatic optimization
        (forward, ``zero_grad``, backward, step) through its manual-optimization API, so every step is
        counted, hooked and precision-handled as Lightning's own. Stops where Lightning would have stopped
        between two training_steps: a stop request (the divergence guard) or ``max_steps``."""
        trainer = self.trainer
        optimizer = self.optimizers()
        loss = None
        for batch in block:
            # What Lightning's loop does to each batch it serves: the precision's dtype, then the device.
            batch = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch))
            loss = self._train_on(batch)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            if self.step_log.due():
                self.flush_steps(keep_current=True)
            if trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step:
                break  # the rest of the block stays unserved (a checkpoint resumes at the next batch)
        return None if loss is None else loss.detach()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.step_log.due():
            # The current step stays pending: a callback's on_train_batch_end may still add to it.
            self.flush_steps(keep_current=True)
            if "train/loss" in self.step_log.latest:  # the progress bar's value (not a logger's)
                self.log("train/loss", self.step_log.latest["train/loss"], prog_bar=True, logger=False)

    def on_train_epoch_end(self) -> None:
        self.flush_steps()
        # A run resumed from a checkpoint taken at an epoch's last batch (Ctrl+C there) trains an empty
        # remainder of that epoch: no batch, no train/* value (R2 of nothing would raise).
        if any(metric.update_count for metric in self.train_metrics.values()):
            self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        self._log_at_current_step()

    def on_train_end(self) -> None:
        self.flush_steps()  # a run stopped mid-epoch (max_steps, the divergence guard) writes its last steps

    def flush_steps(self, keep_current: bool = False) -> None:
        """Write the pending steps (:meth:`StepLog.flush`) and update the train/* metrics with their batches:
        one host sync and one metric update per block instead of per step."""
        if self._train_batches:
            preds, targets = zip(*self._train_batches, strict=True)
            self._train_batches = []
            self.train_metrics.update(*self._metric_inputs(torch.cat(preds), torch.cat(targets)))
        self.step_log.flush(self.loggers, reduce=self._mean_over_processes, keep_current=keep_current)

    def _mean_over_processes(self, values: Tensor) -> Tensor:
        """DDP: each process holds the loss of its equal share of the global batch (InMemoryBatches.shard),
        so their mean is the global batch's loss, as in a single-process run; values computed from the
        synchronised weights are equal on every process. One all-reduce per flush."""
        if self.trainer.world_size == 1:
            return values
        return self.trainer.strategy.reduce(values, reduce_op="mean")

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        preds = self.net(x)
        # sync_dist: under DDP the epoch value is reduced over processes (each evaluates the whole split,
        # so it is unchanged); a no-op in a single process.
        self.log(
            f"{stage}/loss",
            self.loss_fn(preds, y),
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=len(x),
            sync_dist=True,
        )
        getattr(self, f"{stage}_metrics").update(*self._metric_inputs(preds.detach(), y))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics, on_step=False, on_epoch=True)
        self._log_at_current_step()

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics, on_step=False, on_epoch=True)
        self._log_at_current_step()

    def _log_at_current_step(self) -> None:
        """Epoch values go to the loggers at ``global_step``: the steps taken so far, i.e. the point whose
        weights they measure (``train/loss`` of step ``t`` sits at ``t``, before that step). Lightning would
        write them at its count of training_steps, unless a ``step`` value is logged with them (its
        documented override): a training_step may take a block of steps."""
        if self.trainer.loggers:
            self.log("step", float(self.global_step), on_step=False, on_epoch=True, batch_size=1)

    def _metric_inputs(self, preds: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.hparams.task == "classification":
            return preds, y
        return (preds.squeeze(-1), y.squeeze(-1)) if preds.shape[-1] == 1 else (preds, y)

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.net(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = {**self.schedule, "scheduler": self.scheduler_factory(optimizer)}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[STEPS_PER_CALL_KEY] = self.steps_per_call  # how to resume it (gdlab.blocks)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The configured optimizer settings win over the checkpoint's: torch's ``load_state_dict`` would
        bring back each group's ``lr`` (and the rest) with the optimizer's state, so ``resume=<run>
        optimizer.lr=0.5`` would silently go on at the old rate while ``config.yaml`` says 0.5.

        Under a schedule the group's ``lr`` is the schedule's current value, part of the state the run
        resumes bitwise: it comes from the checkpoint (with the schedule's own state); a changed
        ``optimizer.lr`` is reported, not applied halfway through a schedule."""
        states = checkpoint.get("optimizer_states") or []
        if len(states) != 1:
            return
        scheduled = bool(checkpoint.get("lr_schedulers")) or self.scheduler_factory is not None
        configured = self.optimizer_factory(self.parameters()).param_groups
        for group, saved in zip(configured, states[0].get("param_groups", []), strict=False):
            for name, value in group.items():
                if scheduled and name == "lr":
                    base = saved.get("initial_lr", value)
                    if base != value:
                        log.warning(
                            "optimizer.lr: %s in the checkpoint's schedule, %s in the config: the schedule "
                            "resumes from the checkpoint (start a new run to change its base rate)",
                            base,
                            value,
                        )
                    continue
                if name != "params" and name in saved and saved[name] != value:
                    log.info(
                        "optimizer %s: %s in the checkpoint, %s from the config (used)",
                        name,
                        saved[name],
                        value,
                    )
                    saved[name] = value
