"""Convex vs non-convex: a small network from many seeds at several widths.

The linear model on MSE is convex: every start reaches the same loss. A network with one or two hidden
units is not: some seeds stop on a plateau or in a poor minimum, far above the others, while a wide
network's seeds all reach about the same low loss. :class:`HessianSpectrum` records, at the end of a
run, the smallest and largest eigenvalue of the exact Hessian of the training loss (the small models have
few parameters). That says something only at a stationary point: :class:`StationaryStop` trains each run
until the gradient norm is below a stated tolerance (or the step budget, ``trainer.max_epochs`` full-batch
steps, runs out), and :class:`NonconvexSummary` classifies each seed's end point as a minimum (all
eigenvalues > 0), a flat direction (the smallest ~ 0, e.g. a dead unit), a saddle (a negative one), or
"not stationary" (the budget ran out first), and draws the final losses of the seeds at each width.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from torch.func import functional_call

from gdlab.callbacks import figures
from gdlab.callbacks.steplog import StepLog
from gdlab.errors import ArgumentError
from gdlab.runs.sweep import SEED_KEY, load_jobs

log = logging.getLogger(__name__)

MIN_EIG, MAX_EIG = "train/hessian_min_eig", "train/hessian_max_eig"
GRAD_NORM = "train/grad_norm"
WIDTH_KEY = "model.hidden_sizes"
STATIONARY_KEY = "callbacks.stationary.tolerance"  # where a job's config states its tolerance
# |smallest eigenvalue| below this share of the largest: a flat direction, not a minimum or a saddle.
FLAT = 1e-6


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
        last = last or trainer.should_stop  # stopped early: at a stationary point (StationaryStop)
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
            steps = [pl_module.final_step(i) for i in range(members)]  # where each stopped
            StepLog.of(trainer, self).write_members(values, steps, trainer.current_epoch, range(members))
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


class StationaryStop(L.Callback):
    """Stops training once the gradient norm of the training loss is below ``tolerance``: the run ended at
    a stationary point (as far as ``tolerance`` says). It logs ``train/grad_norm`` every step (the norm of
    the gradient the step used) and checks it when the step log is flushed (each epoch's end; one step per
    epoch in full-batch descent), so it adds no host sync per step. With members (:mod:`gdlab.vectorized`),
    each member stops on its own gradient.

    Args:
        tolerance: the gradient norm below which a run counts as stationary.
    """

    def __init__(self, tolerance: float = 1e-4) -> None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance > 0:
            raise ArgumentError("tolerance", f"Invalid tolerance: {tolerance!r} (must be a number > 0)")
        self.tolerance = float(tolerance)
        self.reached: dict[int, int] = {}  # member (0 for a run) -> the step its gradient norm was below
        self._params: list[torch.Tensor] = []
        self._module: L.LightningModule | None = None
        self._trainer: L.Trainer | None = None
        self._log: StepLog | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._trainer, self._module, self.reached = trainer, pl_module, {}
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        self._log = StepLog.of(trainer, self)
        if self.read not in self._log.readers:
            self._log.readers.append(self.read)

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        members = getattr(pl_module, "members", None)
        if members:
            norm = torch.cat([g.reshape(members, -1) for g in grads], dim=1).norm(dim=1)
        else:
            norm = torch.cat([g.reshape(-1) for g in grads]).norm()
        self._log.add({GRAD_NORM: norm})

    def read(self, rows: list[Any]) -> None:
        """A step-log reader: stop (the run, or each member) at the first step below the tolerance."""
        module, trainer = self._module, self._trainer
        members = getattr(module, "members", None)
        for i in range(members or 1):
            if i in self.reached or (members and not module.is_active(i)):
                continue
            for row in rows:
                value = (row.members[i] if members else row.values).get(GRAD_NORM)
                if value is not None and value < self.tolerance:
                    self.reached[i] = row.step
                    break
            else:
                continue
            if members:
                module.stop_member(i, trainer)
            else:
                log.info("stationary: ||grad L|| < %g at step %d", self.tolerance, self.reached[i])
                trainer.should_stop = True


@dataclass
class Width:
    """The seeds of one width: their final training losses and Hessian minimum eigenvalues."""

    width: str
    seeds: list[str]
    losses: list[float]
    min_eigs: list[float | None]
    kinds: list[str] = field(default_factory=list)  # where each seed ended (:func:`end_point`)
    steps: list[int] = field(default_factory=list)

    @property
    def spread(self) -> float:
        """max - min of the final losses across seeds."""
        return max(self.losses) - min(self.losses) if self.losses else math.nan


def tolerance_of(job_dir: Path) -> float | None:
    """The gradient-norm tolerance a job trained to (its config's ``callbacks.stationary``), if any."""
    config = job_dir / ".hydra" / "config.yaml"
    if not config.is_file():
        return None
    value = OmegaConf.select(OmegaConf.load(config), STATIONARY_KEY, default=None)
    return float(value) if isinstance(value, (int, float)) else None


def end_point(record: dict[str, Any], tolerance: float | None) -> str:
    """Where a run ended: ``not stationary`` (its last gradient norm above the tolerance: the budget ran
    out first), else from the Hessian's extreme eigenvalues ``minimum``, ``flat`` or ``saddle``; ``-``
    without a Hessian."""
    grad = record.get(GRAD_NORM)
    if tolerance is not None and not (isinstance(grad, (int, float)) and grad < tolerance):
        return "not stationary"
    low, high = record.get(MIN_EIG), record.get(MAX_EIG)
    if not isinstance(low, (int, float)):
        return "-"
    scale = FLAT * max(abs(high) if isinstance(high, (int, float)) else 1.0, 1.0)
    if low < -scale:
        return "saddle"
    return "flat" if low <= scale else "minimum"


def widths(sweep_dir: str | Path, metric: str = "train/loss") -> list[Width]:
    """The sweep's completed jobs grouped by ``model.hidden_sizes``, each seed's final loss and end point."""
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
        group.kinds.append(end_point(job.record, tolerance_of(job.path)))
        group.steps.append(int(job.record.get("step", 0)))

    def size(width: Width) -> tuple[int, str]:
        digits = "".join(c for c in width.width if c.isdigit())
        return (int(digits) if digits else 0, width.width)

    return sorted(groups.values(), key=size)


def markdown(found: list[Width]) -> str:
    """Per width: the final losses (min, max, spread, std) and where each seed stopped."""
    lines = [
        "| hidden sizes | seeds | final train/loss min | max | spread (max - min) | std | end point | steps |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for w in found:
        std = statistics.stdev(w.losses) if len(w.losses) > 1 else 0.0
        kinds: dict[str, int] = {}
        for kind in w.kinds:
            kinds[kind] = kinds.get(kind, 0) + 1
        stopped = ", ".join(f"{k} {c}" for k, c in sorted(kinds.items()))
        lines.append(
            f"| {w.width} | {','.join(w.seeds)} | {min(w.losses):.4g} | {max(w.losses):.4g} | {w.spread:.3g} "
            f"| {std:.3g} | {stopped} | {min(w.steps)}-{max(w.steps)} |"
        )
    return "\n".join(lines)


def figure(found: list[Width], title: str) -> Any:
    """Each seed's final loss at each width (log scale), marked by what the Hessian says."""
    fig = figures.new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    styles = {
        "minimum": ("o", "C0"),
        "flat": ("s", "C1"),
        "saddle": ("v", "C3"),
        "not stationary": ("x", "0.3"),
        "-": ("o", "0.5"),
    }
    seen = set()
    for i, w in enumerate(found):
        for j, (loss, kind) in enumerate(zip(w.losses, w.kinds, strict=True)):
            marker, color = styles[kind]
            offset = (j - (len(w.losses) - 1) / 2) * 0.04
            label = {
                "minimum": "minimum (Hessian >= 0)",
                "flat": "flat direction (min eigenvalue ~ 0)",
                "saddle": "saddle (negative eigenvalue)",
                "not stationary": "not stationary (step budget ran out)",
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
    jobs = [j for j in load_jobs(sweep_dir) if j.status == "completed"]
    tolerance = tolerance_of(jobs[0].path) if jobs else None
    where = f"where ||grad L|| < {tolerance:g}" if tolerance is not None else "at the last step"
    title = f"final training loss of each seed by width\nend point from the exact Hessian {where}"
    add_figure(sweep_dir, "lessons/nonconvex", figure(found, title))
    log.info("final losses across seeds: %s\n%s", sweep_dir / "nonconvex.md", text)
    return found


class NonconvexSummary(Callback):
    """Hydra callback: at the end of the ``nonconvex`` multirun, write :func:`write`'s table and picture."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write(sweep_dir)
