"""Learning-rate regimes: one problem at rates given as multiples of its critical rate ``c = 2/lambda_max``.

Full-batch GD on a quadratic multiplies the error along the Hessian's eigenvector ``i`` by
``1 - lr lambda_i`` each step, so the error shrinks by ``rho(lr) = max(|1 - lr lambda_min|,
|1 - lr lambda_max|)`` per step and the loss gap by ``rho^2``. ``rho`` is smallest at the optimal
constant rate ``2 / (lambda_min + lambda_max)``; it is 1 at ``lr = c`` and above 1 beyond it.

The experiment ``lr_regimes`` writes the rate as ``lr_regime`` (``0.5c``, ``optimal`` or a plain
number); :func:`learning_rate` turns it into ``optimizer.lr`` from the data (the ``gdlab_lr`` resolver),
and :class:`LrRegimesSummary` draws the sweep's loss gaps and tabulates the steps to tolerance.
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
from gdlab.errors import ArgumentError
from gdlab.lessons.series import read_series
from gdlab.runs.sweep import load_jobs

log = logging.getLogger(__name__)

REGIME_KEY = "lr_regime"
TOLERANCE = 1e-6  # steps until L - L* <= TOLERANCE * L*


def learning_rate(regime: Any, ref: Reference) -> float:
    """``"0.5c"`` -> 0.5 x ``2/lambda_max``; ``"optimal"`` -> ``2/(lambda_min + lambda_max)``; a number: itself."""
    text = str(regime).strip()
    if text == "optimal":
        return 2.0 / (ref.lambda_min + ref.lambda_max)
    try:
        value = float(text[:-1]) * ref.critical_lr if text.endswith("c") else float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ArgumentError(
            REGIME_KEY,
            f"Invalid lr_regime: {regime!r} (a multiple of the critical rate such as 0.5c, optimal, or a rate > 0)",
        )
    return value


def contraction(lr: float, ref: Reference) -> float:
    """``max(|1 - lr lambda_min|, |1 - lr lambda_max|)``: how much full-batch GD shrinks the error per step."""
    return max(abs(1 - lr * ref.lambda_min), abs(1 - lr * ref.lambda_max))


def predicted_steps(lr: float, ref: Reference, gap0: float, target: float) -> float:
    """Steps for the gap to fall from ``gap0`` to ``target`` at ``rho^2`` per step (inf when it does not)."""
    rho = contraction(lr, ref)
    if rho >= 1:
        return math.inf
    return math.log(target / gap0) / (2 * math.log(rho))


def steps_to(series: list[tuple[int, float]], target: float) -> int | None:
    """The first step whose value is at or below ``target`` (None: never)."""
    return next((step for step, value in series if value <= target), None)


def label(lr: float, ref: Reference, regime: str) -> str:
    """``0.5c``, ``0.58c (optimal)``, ``0.01 = 0.011c``: the rate as a multiple of c."""
    multiple = f"{lr / ref.critical_lr:.3g}c"
    if regime == "optimal":
        return f"{multiple} (optimal)"
    return multiple if regime.endswith("c") else f"lr {regime} = {multiple}"


@dataclass
class Regime:
    """One job of the sweep: its rate and what it did."""

    regime: str
    lr: float
    label: str
    contraction: float
    status: str
    gaps: list[tuple[int, float]]
    steps: int | None  # to tolerance, measured
    predicted: float  # to tolerance, from the contraction factor


def regimes(sweep_dir: str | Path, ref: Reference) -> list[Regime]:
    """The sweep's jobs by rate, each with its loss gap series and steps to ``TOLERANCE * L*``."""
    found = []
    for job in load_jobs(sweep_dir):
        config = job.path / ".hydra" / "config.yaml"
        regime = job.overrides.get(REGIME_KEY)
        if regime is None or not config.is_file():
            continue
        lr = float(OmegaConf.load(config).optimizer.lr)
        gaps = read_series(job.path, "diag/loss_gap")
        target = TOLERANCE * ref.loss
        predicted = predicted_steps(lr, ref, gaps[0][1], target) if gaps else math.inf
        found.append(
            Regime(
                regime,
                lr,
                label(lr, ref, regime),
                contraction(lr, ref),
                job.status,
                gaps,
                steps_to(gaps, target),
                predicted,
            )
        )
    return sorted(found, key=lambda r: r.lr)


def markdown(found: list[Regime], ref: Reference) -> str:
    """The table (steps to tolerance, contraction, status) and the note on the rate 0.01."""
    lines = [
        f"Critical rate c = 2/lambda_max = {ref.critical_lr:.4g}; lambda_min = {ref.lambda_min:.4g}, "
        f"lambda_max = {ref.lambda_max:.4g}; optimal constant rate 2/(lambda_min + lambda_max) = "
        f"{2 / (ref.lambda_min + ref.lambda_max):.4g}. Steps until L - L* <= {TOLERANCE:g} x L* ({ref.loss:.4g}).",
        "",
        "| lr_regime | lr | multiple of c | contraction per step | steps to tolerance | predicted | status |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in found:
        steps = "not reached" if r.steps is None else str(r.steps)
        predicted = "never" if math.isinf(r.predicted) else f"{r.predicted:.0f}"
        lines.append(
            f"| {r.regime} | {r.lr:.4g} | {r.lr / ref.critical_lr:.3g} | {r.contraction:.4f} | {steps} | {predicted} | {r.status} |"
        )
    note = small_rate_note(found)
    return "\n".join(lines + (["", note] if note else []))


def small_rate_note(found: list[Regime], small: str = "0.01") -> str | None:
    """How many times slower the popular small rate is than the best stable rate of the sweep."""
    reached = [r for r in found if r.steps is not None and r.status == "completed"]
    small_runs = [r for r in found if r.regime == small]
    if not reached or not small_runs:
        return None
    best = min(reached, key=lambda r: r.steps)
    slow = small_runs[0]
    if slow.steps is None:
        return f"lr = {small} did not reach the tolerance; {best.label} took {best.steps} steps."
    return (
        f"lr = {small} ({slow.label}) needs {slow.steps} steps, {slow.steps / max(best.steps, 1):.0f} x "
        f"the {best.steps} of the best stable rate {best.label}."
    )


def figure(found: list[Regime], ref: Reference, title: str) -> Any:
    """Loss gap against step on a log scale, one curve per rate, labelled with its multiple of c."""
    fig = figures.new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    floor = TOLERANCE * ref.loss
    for r in found:
        if not r.gaps:
            continue
        steps, gaps = zip(*r.gaps, strict=True)
        text = f"{r.label}: " + (
            f"{r.steps} steps"
            if r.steps is not None
            else r.status
            if r.status != "completed"
            else "not reached"
        )
        ax.plot(steps, gaps, lw=1.4, label=text)
    ax.axhline(floor, color="0.4", ls="--", lw=0.8, label=f"tolerance {TOLERANCE:g} x L*")
    ax.set_yscale("log")
    ax.set_ylim(floor * 1e-3, None)
    ax.set_xlabel("step")
    ax.set_ylabel("L - L* (diag/loss_gap)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    return fig


def write(sweep_dir: str | Path) -> list[Regime]:
    """``lr_regimes.md`` and ``lr_regimes.png`` in the sweep dir, the picture also in TensorBoard there."""
    from hydra.utils import instantiate

    from gdlab.lessons.tensorboard import add_figure

    sweep_dir = Path(sweep_dir)
    jobs = [j for j in load_jobs(sweep_dir) if (j.path / ".hydra" / "config.yaml").is_file()]
    if not jobs:
        return []
    ref = instantiate(OmegaConf.load(jobs[0].path / ".hydra" / "config.yaml").data).closed_form()
    found = regimes(sweep_dir, ref)
    text = markdown(found, ref)
    (sweep_dir / "lr_regimes.md").write_text(f"# Learning-rate regimes: {sweep_dir.name}\n\n{text}\n")
    fig = figure(
        found, ref, f"{sweep_dir.name}: loss gap by learning rate (c = 2/lambda_max = {ref.critical_lr:.4g})"
    )
    add_figure(sweep_dir, "lessons/lr_regimes", fig)
    log.info("learning-rate regimes: %s\n%s", sweep_dir / "lr_regimes.md", text)
    return found


class LrRegimesSummary(Callback):
    """Hydra callback: at the end of the ``lr_regimes`` multirun, write :func:`write`'s table and picture."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            write(sweep_dir)
