"""Pictures of the descent in TensorBoard and as PNGs, every ``every_n_epochs`` epochs and at the end.

What is drawn depends on what the run is, found out at fit start:
- regression on 1 input feature: the training data and the model's current line or curve;
- the 2-parameter linear model (1 feature + bias) on MSE: the loss landscape over ``(w, b)`` with
  the gradient-descent path and the least-squares optimum, and the steps' sizes against the distance
  to the optimum with their bounds ``lr lambda_min`` and ``lr lambda_max`` (:mod:`gdlab.lessons.step_sizes`);
- classification: the confusion matrix on the validation split.
Anything else: nothing (and no per-step cost).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from gdlab.callbacks import figures
from gdlab.callbacks.linear import LinearView, linear_view
from gdlab.callbacks.stability import stability_bound
from gdlab.errors import ArgumentError

log = logging.getLogger(__name__)


class DescentPictures(L.Callback):
    """Draws the pictures that apply to this run (see the module docstring).

    Args:
        dirpath: where the PNGs go (``<run dir>/plots`` in the default config); ``null``: only TensorBoard.
        every_n_epochs: draw after every n-th training epoch; the final state is always drawn.
        max_points: at most this many training samples in the scatter.
    """

    def __init__(self, dirpath: str | None = None, every_n_epochs: int = 5, max_points: int = 500) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ArgumentError(
                "every_n_epochs", f"Invalid every_n_epochs: {every_n_epochs!r} (must be an integer >= 1)"
            )
        self.dirpath = Path(dirpath) if dirpath else None
        self.every_n_epochs = every_n_epochs
        self.max_points = max_points
        self.saved: list[Path] = []
        self._kinds: list[str] = []
        self._view: LinearView | None = None
        self._path: list[Tensor] = []
        self._last_drawn_step = -1
        self._hooks: list[Any] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        task = getattr(dm, "task", None)
        splits = getattr(dm, "splits", None) or {}
        self._kinds, self._path, self._view = [], [], None
        if (
            task == "regression"
            and "train" in splits
            and (_one_raw_input(dm) or splits["train"][0].shape[1:] == (1,))
        ):
            self._kinds.append("fit")
        view = linear_view(trainer, pl_module)
        if view is not None and view.bias is not None and view.weight.numel() == 1:
            self._view = view
            self._kinds += ["landscape", "steps"]
            self._path.append(self._theta())
        if task == "classification" and "val" in splits:
            self._kinds.append("confusion")

    def _theta(self) -> Tensor:
        return torch.cat(
            [self._view.weight.detach().reshape(1, 1), self._view.bias.detach().reshape(1, 1)], 1
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The path grows after each optimizer step (torch's step post-hook).
        self._hooks = [opt.register_step_post_hook(self._after_step) for opt in trainer.optimizers]

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if self._view is not None:
            self._path.append(self._theta())  # a 2-element copy on the device: no sync

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._kinds and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.draw(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._kinds and self._last_drawn_step != trainer.global_step:
            self.draw(trainer, pl_module, final=True)

    @torch.no_grad()
    def draw(self, trainer: L.Trainer, pl_module: L.LightningModule, final: bool = False) -> None:
        """Draw every picture that applies, log it to TensorBoard and save it as PNG."""
        self._last_drawn_step = step = trainer.global_step
        label = "final" if final else f"epoch{trainer.current_epoch + 1:04d}"
        title = f"epoch {trainer.current_epoch + 1}, step {step}"
        was_training = pl_module.training
        pl_module.eval()
        try:
            for kind in self._kinds:
                fig = getattr(self, f"_draw_{kind}")(trainer, pl_module, title)
                self._emit(trainer, fig, kind, label, step)
        finally:
            pl_module.train(was_training)

    def _draw_fit(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str):
        dm = trainer.datamodule
        # Data built from one raw input (e.g. polynomial features of x) is drawn over that input.
        x, y = dm.raw_x["train"] if _one_raw_input(dm) else dm.splits["train"]
        x, y = x.reshape(len(x), -1)[:, :1].cpu(), y.reshape(len(y), -1)[:, :1].cpu()
        if len(x) > self.max_points:
            idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: self.max_points]
            x, y = x[idx], y[idx]
        grid = torch.linspace(float(x.min()), float(x.max()), 200, dtype=torch.float64).unsqueeze(1)
        inputs = dm.features(grid.squeeze(1)) if _one_raw_input(dm) else grid
        param = next(pl_module.parameters())
        pred = pl_module(inputs.to(device=param.device, dtype=param.dtype)).float().cpu()
        return figures.draw_fit(x.double(), y.double(), grid, pred[:, :1], title)

    def _draw_landscape(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str):
        self._path = [torch.cat(self._path)]  # (steps + 1, 2): one tensor, so later draws concatenate little
        path = self._path[0].cpu()
        ref = self._view.reference
        optimizer = trainer.optimizers[0]
        lr = float(optimizer.param_groups[0]["lr"])  # the current one, under a schedule
        bound = stability_bound(optimizer, ref.critical_lr)
        rate = f"lr = {lr:g}"
        if bound is not None:
            rate += f" = {lr / bound.critical_lr:.2f} x critical ({bound.critical_lr:.3g})"
        return figures.draw_landscape(ref, path, f"{title}\n{rate}")

    def _draw_steps(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str):
        from gdlab.lessons import step_sizes

        self._path = [torch.cat(self._path)]
        ref = self._view.reference
        optimum = torch.cat([ref.w.reshape(1), ref.b.reshape(1)])
        updates, distances = step_sizes.step_sizes(self._path[0].cpu(), optimum)
        lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        return step_sizes.figure(
            updates,
            distances,
            lr,
            ref.lambda_min,
            ref.lambda_max,
            f"{title}: steps shrink with the distance (lr = {lr:g})",
        )

    def _draw_confusion(self, trainer: L.Trainer, pl_module: L.LightningModule, title: str):
        dm = trainer.datamodule
        num_classes = dm.num_outputs
        param = next(pl_module.parameters())
        preds, targets = [], []
        for x, y in dm.val_dataloader():
            preds.append(pl_module(x.to(param.device)).argmax(dim=-1).cpu())
            targets.append((y.argmax(dim=-1) if y.ndim > 1 else y).cpu())  # one-hot targets: their class
        matrix = figures.confusion_matrix(torch.cat(preds), torch.cat(targets), num_classes)
        accuracy = float(matrix.diagonal().sum()) / max(int(matrix.sum()), 1)
        return figures.draw_confusion(matrix, f"validation, {title}: accuracy {accuracy:.3f}")

    def _emit(self, trainer: L.Trainer, fig, kind: str, label: str, step: int) -> None:
        image = figures.to_rgb(fig)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(f"pictures/{kind}", image, global_step=step, dataformats="HWC")
        if self.dirpath is not None and trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            path = self.dirpath / f"{kind}_{label}.png"
            figures.save_png(image, path)
            self.saved.append(path)


def _one_raw_input(datamodule: object) -> bool:
    """The data is features of one raw input: it keeps ``raw_x[split] = (x, y)`` and has ``features(x)``."""
    raw = getattr(datamodule, "raw_x", None)
    return (
        isinstance(raw, dict)
        and "train" in raw
        and callable(getattr(datamodule, "features", None))
        and raw["train"][0].reshape(len(raw["train"][0]), -1).shape[1] == 1
    )
