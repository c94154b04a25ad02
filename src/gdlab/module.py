"""GDModule: the one LightningModule. A network, a loss and an optimizer factory, all from config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from gdlab.metrics import build_metrics


class GDModule(L.LightningModule):
    """Trains ``net`` by minimising ``loss_fn`` with the optimizer built by ``optimizer(params)``.

    Nothing here is dataset-specific: the datamodule tells the ``task`` (which metrics to report)
    and ``num_outputs``. Only primitives are saved as hyperparameters (``task``, ``num_outputs``
    and the run's resolved ``config`` as a plain dict), so every checkpoint loads with
    ``torch.load(path, weights_only=True)``.
    """

    def __init__(
        self,
        net: nn.Module,
        loss_fn: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        task: str = "regression",
        num_outputs: int = 1,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters("task", "num_outputs", "config")
        self.net = net
        self.loss_fn = loss_fn
        self.optimizer_factory = optimizer
        metrics = build_metrics(task, num_outputs)
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _shared_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        preds = self.net(x)
        loss = self.loss_fn(preds, y)
        on_step = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True, batch_size=len(x)
        )
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(*self._metric_inputs(preds.detach(), y))
        self.log_dict(metrics, on_step=False, on_epoch=True, batch_size=len(x))
        return loss

    def _metric_inputs(self, preds: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.hparams.task == "classification":
            return preds, y
        return (preds.squeeze(-1), y.squeeze(-1)) if preds.shape[-1] == 1 else (preds, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._shared_step(batch, "test")

    def predict_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        return self.net(batch[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.parameters())
