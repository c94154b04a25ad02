"""Final loss against ``lr / c`` for many learning rates: the three regimes of full-batch gradient descent.

On a quadratic, the error along the Hessian's eigenvector ``i`` is multiplied by ``1 - lr lambda_i`` each
step. Below ``1/lambda_max = 0.5c`` every factor is positive: the loss falls smoothly. Between ``0.5c``
and ``c = 2/lambda_max`` the steepest direction's factor is negative: the iterates oscillate across the
valley and still converge. Above ``c`` that factor exceeds 1 in size: they diverge. The experiment
``lr_scan`` trains the lecture problem at 120 rates from 0.02c to 2.4c, all at once (the vectorized
launcher); :class:`LrScanSummary` draws each rate's final loss and tabulates the regimes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gdlab.analysis import Reference
from gdlab.callbacks import figures
from gdlab.runs.sweep import load_jobs

log = logging.getLogger(__name__)


@dataclass
class Rate:
    """One job of the scan: its rate as a multiple of c, its final training loss and how it ended."""

    multiple: float
    loss: float | None
    status: str


def regime(multiple: float) -> str:
    """``smooth`` below 0.5c, ``oscillating`` up to c, ``divergent`` above it."""
    return "smooth" if multiple < 0.5 else "oscillating" if multiple < 1 - 1e-9 else "divergent"


def rates(sweep_dir: str | Path, ref: Reference) -> list[Rate]:
    """Every job of the sweep by rate: ``optimizer.lr / c`` from its config, its final ``train/loss``."""
    found = []
    for job in load_jobs(sweep_dir):
        config = job.path / ".hydra" / "config.yaml"
        if not config.is_file():
            continue
        lr = float(OmegaConf.load(config).optimizer.lr)
        loss = job.record.get("train/loss")
        finite = isinstance(loss, (int, float)) and math.isfinite(loss)
        found.append(Rate(lr / ref.critical_lr, float(loss) if finite else None, job.status))
    return sorted(found, key=lambda r: r.multiple)


def markdown(found: list[Rate], ref: Reference) -> str:
    """Per regime: how many rates, how many diverged, the lowest final loss and where."""
    lines = [
        f"c = 2/lambda_max = {ref.critical_lr:.4g}; L* = {ref.loss:.6g}. Final train/loss after the same steps.",
        "",
        "| regime | lr / c | rates | diverged | lowest final loss | at lr / c |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    spans = {"smooth": "< 0.5", "oscillating": "0.5 - 1", "divergent": "> 1"}
    for name, span in spans.items():
        members = [r for r in found if regime(r.multiple) == name]
        done = [r for r in members if r.status == "completed" and r.loss is not None]
        best = min(done, key=lambda r: r.loss) if done else None
        diverged = sum(r.status == "diverged" for r in members)
        low = f"{best.loss:.6g} | {best.multiple:.2f}" if best else "- | -"
        lines.append(f"| {name} | {span} | {len(members)} | {diverged} | {low} |")
    return "\n".join(lines)


def figure(found: list[Rate], ref: Reference, title: str) -> Any:
    """The final loss gap ``L - L*`` (log scale) against lr / c, the regimes shaded, diverged rates as x at
    the top, with the closed form's contraction ``rho(lr)^(2 steps)`` relative to the smallest gap's rate."""
    fig = figures.new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    ok = [r for r in found if r.status == "completed" and r.loss is not None]
    bad = [r for r in found if r not in ok]
    floor = 1e-15 * ref.loss  # float64 rounding of L itself
    gaps = [max(r.loss - ref.loss, floor) for r in ok]
    ax.plot(
        [r.multiple for r in ok], gaps, "o", ms=3, color="C0", label="completed: L - L* after the last step"
    )
    if bad:
        ax.plot(
            [r.multiple for r in bad],
            [0.93] * len(bad),
            "x",
            color="C3",
            transform=ax.get_xaxis_transform(),
            label="diverged (stopped by the guard)",
        )
    ax.axhline(floor, color="0.4", ls="--", lw=0.8, label="the float64 floor of L (1e-15 L*)")
    for x, color, name in ((0.0, "C2", "smooth"), (0.5, "C1", "oscillating"), (1.0, "C3", "divergent")):
        ax.axvspan(
            x, {0.0: 0.5, 0.5: 1.0, 1.0: max(2.5, max(r.multiple for r in found))}[x], color=color, alpha=0.08
        )
        ax.text(x + 0.02, 0.55, name, transform=ax.get_xaxis_transform(), fontsize=8, color=color)
    optimal = 2 / (ref.lambda_min + ref.lambda_max) / ref.critical_lr
    ax.axvline(
        optimal, color="0.3", lw=0.8, ls=":", label=f"optimal 2/(lambda_min + lambda_max) = {optimal:.2f}c"
    )
    ax.set_yscale("log")
    ax.set_xlabel("learning rate / c   (c = 2 / lambda_max)")
    ax.set_ylabel("final L - L*  (train/loss - least squares)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    return fig


def write(sweep_dir: str | Path) -> list[Rate]:
    """``lr_scan.md`` and ``lr_scan.png`` in the sweep dir, the picture also in TensorBoard there."""
    from hydra.utils import instantiate

    from gdlab.lessons.tensorboard import add_figure

    sweep_dir = Path(sweep_dir)
    jobs = [j for j in load_jobs(sweep_dir) if (j.path / ".hydra" / "config.yaml").is_file()]
    if not jobs:
        return []
    config = OmegaConf.load(jobs[0].path / ".hydra" / "config.yaml")
    ref = instantiate(config.data).closed_form()
    found = rates(sweep_dir, ref)
    text = markdown(found, ref)
    (sweep_dir / "lr_scan.md").write_text(f"# Final loss by learning rate: {sweep_dir.name}\n\n{text}\n")
    steps = config.trainer.max_epochs
    title = f"loss gap after {steps} full-batch steps at {len(found)} learning rates (the lecture problem)"
    add_figure(sweep_dir, "lessons/lr_scan", figure(found, ref, title))
    log.info("final loss by learning rate: %s\n%s", sweep_dir / "lr_scan.md", text)
    return found


class LrScanSummary(Callback):
    """Hydra callback: at the end of the ``lr_scan`` multirun, write :func:`write`'s table and picture."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write(sweep_dir)
