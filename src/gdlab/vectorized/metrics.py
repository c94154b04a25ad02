"""The epoch metrics of :class:`gdlab.module.GDModule` (``gdlab.metrics``), one value per member.

The same formulas as torchmetrics' ``MeanSquaredError``, ``R2Score`` and micro ``MulticlassAccuracy``,
and as Lightning's batch-size-weighted mean of a logged loss, with sums kept per member on the device:
no Python loop over the members, no host sync until the epoch's values are written.
"""

from __future__ import annotations

import torch
from torch import Tensor

# The tasks (and their metric names) this covers: those of gdlab.metrics.METRICS.
NAMES = {"regression": ("mse", "r2"), "classification": ("acc",)}


class MemberMetrics:
    """Running sums of one split (``prefix``: ``train/``, ``val/``, ``test/``) for ``members`` models."""

    def __init__(self, task: str, prefix: str, with_loss: bool) -> None:
        if task not in NAMES:
            raise ValueError(f"unknown task {task!r}: expected one of {sorted(NAMES)}")
        self.task, self.prefix, self.with_loss = task, prefix, with_loss
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.count = 0

    def _add(self, name: str, value: Tensor) -> None:
        self.sums[name] = value if name not in self.sums else self.sums[name] + value

    def _add_float32(self, name: str, value: Tensor) -> None:
        """A sum kept in float32 whatever the precision, each batch's value rounded first: what torchmetrics'
        ``MeanSquaredError`` state does (created in the default dtype, added to in place; Lightning's
        ``.double()`` leaves metric states alone), so its result is float32 even in a float64 run."""
        value = value.to(torch.float32)
        self.sums[name] = value if name not in self.sums else self.sums[name] + value

    @torch.no_grad()
    def update(self, preds: Tensor, target: Tensor, losses: Tensor | None = None) -> None:
        """``preds`` ``(members, batch, outputs)``; ``target`` ``(batch, ...)`` shared or ``(members, batch,
        ...)``; ``losses`` ``(members,)``, each member's mean loss on the batch."""
        batch = preds.shape[1]
        if losses is not None:
            self._add("loss", losses.detach() * batch)
        if self.task == "regression":
            p = preds.reshape(preds.shape[0], batch)  # one output (gdlab.vectorized checks it)
            t = target.reshape(-1, batch).to(p.dtype)
            residual = t - p
            squared = (residual * residual).sum(dim=1)
            self._add_float32("sse", squared)  # MeanSquaredError's state
            self._add("rss", squared)  # R2Score's (it adds out of place: the batch's dtype)
            self._add("sum_obs", t.sum(dim=1))
            self._add("sum_squared_obs", (t * t).sum(dim=1))
        else:
            self._add("correct", (preds.argmax(dim=-1) == target).sum(dim=1))
        self.count += batch

    def compute(self) -> dict[str, Tensor]:
        """``{prefix + name: (members,)}``; empty before any update."""
        if not self.count:
            return {}
        n = self.count
        values = {}
        if self.with_loss:
            values["loss"] = self.sums["loss"] / n
        if self.task == "regression":
            values["mse"] = self.sums["sse"] / n
            sse = self.sums["rss"]
            mean_obs = self.sums["sum_obs"] / n
            tss = self.sums["sum_squared_obs"] - self.sums["sum_obs"] * mean_obs
            # torchmetrics' R2Score: 1 where the residuals vanish, 0 where only the targets are constant
            has_rss = ~torch.isclose(sse, torch.zeros_like(sse), atol=1e-4)
            has_tss = ~torch.isclose(tss, torch.zeros_like(tss), atol=1e-4)
            r2 = torch.where(has_rss & has_tss, 1 - sse / tss, torch.ones_like(sse))
            values["r2"] = torch.where(has_rss & ~has_tss, torch.zeros_like(r2), r2)
        else:
            values["acc"] = self.sums["correct"].to(torch.float32) / n
        return {f"{self.prefix}{name}": value for name, value in values.items()}
