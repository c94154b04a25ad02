"""Convex vs non-convex: a small network from many seeds at several widths.

The linear model on MSE is convex: every start reaches the same loss. A network with one or two hidden
units is not: some seeds stop on a plateau or in a poor minimum, far above the others, while a wide
network's seeds all reach about the same low loss. :class:`HessianSpectrum` records, at the end of a
run, the smallest and largest eigenvalue of the exact Hessian of the training loss (the small models have
few parameters), which says whether the run stopped at a minimum (all eigenvalues >= 0) or near a saddle
(a negative one); :class:`NonconvexSummary` draws the final losses of a sweep's seeds at each width.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from torch.func import functional_call

from gdlab.callbacks import figures
from gdlab.callbacks.steplog import StepLog
from gdlab.errors import ArgumentError
from gdlab.runs.sweep import SEED_KEY, load_jobs

log = logging.getLogger(__name__)

MIN_EIG, MAX_EIG = "train/hessian_min_eig", "train/hessian_max_eig"
WIDTH_KEY = "model.hidden_sizes"


def loss_hessian(pl_module: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The exact Hessian of ``loss_fn(module(x), y)`` in all trainable parameters, flattened, in float64."""
    named = {n: p.detach().double() for n, p in pl_module.named_parameters() if p.requires_grad}
    shapes = {n: p.shape for n, p in named.items()}
    flat = torch.cat([p.reshape(-1) for p in named.values()])
    x, y = x.double(), y.double()

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for name, shape in shapes.items():
            params[name] = theta[start : start + shape.numel()].reshape(shape)
            start += shape.numel()
        return pl_module.loss_fn(functional_call(pl_module, params, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


class HessianSpectrum(L.Callback):
    """At the end of training, logs the extreme eigenvalues of the training loss's exact Hessian as
    ``train/hessian_min_eig`` and ``train/hessian_max_eig`` (in ``metrics.json`` too).

    Args:
        max_params: skip models with more trainable parameters (the Hessian is ``p x p``).
    """

    def __init__(self, max_params: int = 300) -> None:
        if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 1:
            raise ArgumentError("max_params", f"Invalid max_params: {max_params!r} (must be an integer >= 1)")
        self.max_params = max_params

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        members = getattr(pl_module, "members", None)  # several models trained at once (gdlab.vectorized)
        single = pl_module.member_view(0) if members else pl_module
        n = sum(p.numel() for p in single.parameters() if p.requires_grad)
        if not last or n > self.max_params:
            return
        x, y = trainer.datamodule.splits["train"]
        x = getattr(trainer.datamodule, "inputs", lambda v: v)(x)
        dtype = next(single.parameters()).dtype
        if members:
            eigs = torch.stack([self.extremes(pl_module.member_view(i), x, y) for i in range(members)])
            values = {MIN_EIG: eigs[:, 0].to(dtype), MAX_EIG: eigs[:, 1].to(dtype)}
            StepLog.of(trainer, self).write_members(values, trainer.global_step, trainer.current_epoch)
            return
        eig = self.extremes(pl_module, x, y)
        pl_module.log(MIN_EIG, eig[0].to(dtype), on_epoch=True)
        pl_module.log(MAX_EIG, eig[1].to(dtype), on_epoch=True)

    @staticmethod
    def extremes(module: L.LightningModule, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The smallest and largest eigenvalue of the loss's exact Hessian at the module's weights."""
        was_training = module.training
        module.eval()
        try:
            eig = torch.linalg.eigvalsh(loss_hessian(module, x, y))
        finally:
            module.train(was_training)
        return torch.stack([eig[0], eig[-1]])


@dataclass
class Width:
    """The seeds of one width: their final training losses and Hessian minimum eigenvalues."""

    width: str
    seeds: list[str]
    losses: list[float]
    min_eigs: list[float | None]

    @property
    def spread(self) -> float:
        """max - min of the final losses across seeds."""
        return max(self.losses) - min(self.losses) if self.losses else math.nan


def widths(sweep_dir: str | Path, metric: str = "train/loss") -> list[Width]:
    """The sweep's completed jobs grouped by ``model.hidden_sizes``, each seed's final loss."""
    groups: dict[str, Width] = {}
    for job in load_jobs(sweep_dir):
        loss = job.record.get(metric)
        if job.status != "completed" or not isinstance(loss, (int, float)):
            continue
        key = job.overrides.get(WIDTH_KEY, "")
        group = groups.setdefault(key, Width(key, [], [], []))
        group.seeds.append(job.overrides.get(SEED_KEY, ""))
        group.losses.append(float(loss))
        eig = job.record.get(MIN_EIG)
        group.min_eigs.append(float(eig) if isinstance(eig, (int, float)) else None)

    def size(width: Width) -> tuple[int, str]:
        digits = "".join(c for c in width.width if c.isdigit())
        return (int(digits) if digits else 0, width.width)

    return sorted(groups.values(), key=size)


def _where(eig: float | None, scale: float) -> str:
    if eig is None:
        return "-"
    if eig < -1e-6 * scale:
        return "saddle"
    return "flat" if eig < 1e-6 * scale else "minimum"


def markdown(found: list[Width]) -> str:
    """Per width: the final losses (min, max, spread, std) and where each seed stopped."""
    lines = [
        "| hidden sizes | seeds | final train/loss min | max | spread (max - min) | std | stopped at (Hessian) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for w in found:
        std = statistics.stdev(w.losses) if len(w.losses) > 1 else 0.0
        kinds: dict[str, int] = {}
        for eig in w.min_eigs:
            kind = _where(eig, 1.0)
            kinds[kind] = kinds.get(kind, 0) + 1
        stopped = ", ".join(f"{k} {c}" for k, c in sorted(kinds.items()))
        lines.append(
            f"| {w.width} | {','.join(w.seeds)} | {min(w.losses):.4g} | {max(w.losses):.4g} | {w.spread:.3g} "
            f"| {std:.3g} | {stopped} |"
        )
    return "\n".join(lines)


def figure(found: list[Width], title: str) -> Any:
    """Each seed's final loss at each width (log scale), marked by what the Hessian says."""
    fig = figures.new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    styles = {"minimum": ("o", "C0"), "flat": ("s", "C1"), "saddle": ("v", "C3"), "-": ("o", "0.5")}
    seen = set()
    for i, w in enumerate(found):
        for j, (loss, eig) in enumerate(zip(w.losses, w.min_eigs, strict=True)):
            kind = _where(eig, 1.0)
            marker, color = styles[kind]
            offset = (j - (len(w.losses) - 1) / 2) * 0.04
            label = {
                "minimum": "minimum (Hessian >= 0)",
                "flat": "flat direction (min eigenvalue ~ 0)",
                "saddle": "saddle (negative eigenvalue)",
                "-": "Hessian not computed",
            }[kind]
            ax.plot(
                i + offset, loss, marker, color=color, ms=6, alpha=0.8, label=None if kind in seen else label
            )
            seen.add(kind)
    ax.set_xticks(range(len(found)), [w.width for w in found])
    ax.set_yscale("log")
    ax.set_xlabel("model.hidden_sizes")
    ax.set_ylabel("final train/loss, one point per seed")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


def write(sweep_dir: str | Path) -> list[Width]:
    """``nonconvex.md`` and ``nonconvex.png`` in the sweep dir, the picture also in TensorBoard there."""
    from gdlab.lessons.tensorboard import add_figure

    sweep_dir = Path(sweep_dir)
    found = widths(sweep_dir)
    if not found:
        return found
    text = markdown(found)
    (sweep_dir / "nonconvex.md").write_text(f"# Final losses across seeds: {sweep_dir.name}\n\n{text}\n")
    add_figure(
        sweep_dir, "lessons/nonconvex", figure(found, f"{sweep_dir.name}: final loss of each seed by width")
    )
    log.info("final losses across seeds: %s\n%s", sweep_dir / "nonconvex.md", text)
    return found


class NonconvexSummary(Callback):
    """Hydra callback: at the end of the ``nonconvex`` multirun, write :func:`write`'s table and picture."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write(sweep_dir)
