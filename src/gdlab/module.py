"""GDModule, the LightningModule gdlab trains by default: a network, a loss and an optimizer, all from config.

This is the file to change when you want a different training step (a penalty, another metric, a second
loss term), or to copy into your own module (``module=<yours>``, docs/extending.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from gdlab.metrics import build_metrics, metric_inputs


class GDModule(L.LightningModule):
    """Trains ``net`` by minimising ``loss_fn`` with the optimizer ``optimizer(params)`` builds and, when given,
    the learning-rate schedule ``scheduler(optimizer)``, stepped as ``schedule`` says (Lightning's scheduler
    keys: ``interval``, ``frequency``, ``monitor``).

    ``gdlab.factory.build`` passes each piece from its config group; the datamodule tells the ``task``
    (which metrics to report) and ``num_outputs``. ``training_step`` returns the loss: the ``StepLog``
    callback writes it as ``train/loss`` at every optimizer step, where the divergence guard reads it.
    Epoch values (``train/mse``, ``val/loss``, ``test/acc``, ...) go through ``self.log``.
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
    ) -> None:
        super().__init__()
        # Primitives only, so that every checkpoint loads with torch.load(path, weights_only=True).
        self.save_hyperparameters("task", "num_outputs", logger=False)
        self.net = net
        self.loss_fn = loss_fn
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.schedule = dict(schedule or {})
        metrics = build_metrics(task, num_outputs)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def model_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """The loss of one batch, with the predictions and targets it compared."""
        x, y = batch
        preds = self(x)
        return self.loss_fn(preds, y), preds, y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, preds, y = self.model_step(batch)
        self.train_metrics.update(*metric_inputs(self.hparams.task, preds.detach(), y))
        return loss

    def on_train_epoch_end(self) -> None:
        # An epoch resumed from a checkpoint of its last batch trains no batch: nothing to report.
        if any(metric.update_count for metric in self.train_metrics.values()):
            self.log_dict(self.train_metrics)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics)

    def _evaluate(self, batch: tuple[Tensor, Tensor], metrics: Any, split: str) -> None:
        loss, preds, y = self.model_step(batch)
        # The mean over the split, weighted by batch size. sync_dist: under DDP every process evaluates
        # the whole split, so the mean over processes is the same number.
        self.log(f"{split}/loss", loss, prog_bar=True, batch_size=len(y), sync_dist=True)
        metrics.update(*metric_inputs(self.hparams.task, preds, y))

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = {**self.schedule, "scheduler": self.scheduler_factory(optimizer)}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
