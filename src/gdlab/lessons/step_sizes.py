"""Steps shrink near the optimum at a constant learning rate.

On a quadratic loss the update is ``lr H (theta - theta*)``, so ``||update|| / ||theta - theta*||``
stays within ``[lr lambda_min, lr lambda_max]`` and tends to ``lr lambda_min`` as the error lines up
with the flattest direction (the steeper components shrink faster). Drawn from a run's descent path
by :class:`gdlab.callbacks.DescentPictures` (``pictures/steps``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gdlab.callbacks import figures


def step_sizes(path: Tensor, optimum: Tensor) -> tuple[Tensor, Tensor]:
    """``||theta_{t+1} - theta_t||`` and ``||theta_t - theta*||`` for each step of a ``(steps + 1, p)`` path
    (the ``diag/update_norm`` and ``diag/dist_to_optimum`` of those steps), in float64."""
    path = path.double()
    updates = (path[1:] - path[:-1]).norm(dim=1)
    distances = (path[:-1] - optimum.double().reshape(1, -1)).norm(dim=1)
    return updates, distances


def figure(
    updates: Tensor, distances: Tensor, lr: float, lambda_min: float, lambda_max: float, title: str
) -> Any:
    """Update norm against distance to the optimum (log-log) with the two bounds, and their ratio by step."""
    fig = figures.new_figure(9.0, 3.8)
    left, right = fig.subplots(1, 2)
    d, u = distances.numpy(), updates.numpy()
    left.loglog(d, u, "o-", ms=2.5, lw=1, label="measured steps")
    span = [float(d.min()), float(d.max())]
    left.loglog(
        span,
        [lr * lambda_max * s for s in span],
        "--",
        color="C3",
        label=f"lr x lambda_max = {lr * lambda_max:.3g}",
    )
    left.loglog(
        span,
        [lr * lambda_min * s for s in span],
        "--",
        color="C2",
        label=f"lr x lambda_min = {lr * lambda_min:.3g}",
    )
    left.set_xlabel("distance to the optimum ||theta(t) - theta*||")
    left.set_ylabel("step size ||theta(t+1) - theta(t)||")
    left.legend(fontsize=7)
    left.grid(True, which="both", alpha=0.3)
    ratio = u / d.clip(min=1e-300)
    right.plot(range(len(ratio)), ratio, "o-", ms=2.5, lw=1, label="step / distance")
    right.axhline(lr * lambda_max, ls="--", color="C3", label="lr x lambda_max")
    right.axhline(lr * lambda_min, ls="--", color="C2", label="lr x lambda_min")
    right.set_xlabel("step")
    right.set_ylabel("step / distance")
    right.legend(fontsize=7)
    right.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    return fig
