"""Learning-rate schedules: each a factory called with the optimizer.

``StepLR``, ``CosineAnnealingLR`` and ``ReduceLROnPlateau`` are torch's own, less the values torch accepts
that cannot mean what was wanted (``gamma=-1`` makes the lr negative, ``step_size=0`` divides by zero at
the first step): they check their arguments, in torch's wording, and are torch's classes otherwise.
``warmup_cosine`` chains torch's ``LinearLR`` and ``CosineAnnealingLR``.
"""

from __future__ import annotations

import math
from typing import Any

from torch.optim import Optimizer, lr_scheduler
from torch.optim.lr_scheduler import LinearLR, SequentialLR

from gdlab.errors import ArgumentError


def _check(name: str, value: Any, ok: bool, must: str) -> None:
    if isinstance(value, bool) or not ok:
        raise ArgumentError(name, f"Invalid {name}: {value!r} (must be {must})")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class StepLR(lr_scheduler.StepLR):
    """torch's ``StepLR``: ``lr <- lr * gamma`` every ``step_size`` steps of the schedule."""

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        _check("step_size", step_size, isinstance(step_size, int) and step_size >= 1, "an integer >= 1")
        _check("gamma", gamma, _number(gamma) and gamma > 0, "a number > 0; below 1 the lr decays")
        super().__init__(optimizer, step_size=step_size, gamma=gamma, last_epoch=last_epoch)


class CosineAnnealingLR(lr_scheduler.CosineAnnealingLR):
    """torch's ``CosineAnnealingLR``: from the optimizer's lr down to ``eta_min`` over ``T_max`` steps."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1) -> None:
        _check("T_max", T_max, isinstance(T_max, int) and T_max >= 1, "an integer >= 1")
        _check("eta_min", eta_min, _number(eta_min) and eta_min >= 0, "a number >= 0")
        super().__init__(optimizer, T_max=T_max, eta_min=eta_min, last_epoch=last_epoch)


class ReduceLROnPlateau(lr_scheduler.ReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau``: ``lr <- lr * factor`` when the monitored value stops improving."""

    def __init__(self, optimizer: Optimizer, factor: float = 0.1, patience: int = 10, **kwargs: Any) -> None:
        _check("factor", factor, _number(factor) and 0 < factor < 1, "a number between 0 and 1")
        _check("patience", patience, isinstance(patience, int) and patience >= 0, "an integer >= 0")
        super().__init__(optimizer, factor=factor, patience=patience, **kwargs)


def warmup_cosine(
    optimizer: Optimizer,
    warmup_epochs: int = 2,
    total_epochs: int = 20,
    start_factor: float = 0.1,
    eta_min: float = 0.0,
) -> SequentialLR:
    """Linear warm-up from ``start_factor * lr`` to ``lr`` over ``warmup_epochs`` steps of the schedule, then
    cosine annealing to ``eta_min`` at ``total_epochs``: ``LinearLR`` then ``CosineAnnealingLR``."""
    if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 1:
        raise ArgumentError(
            "warmup_epochs", f"Invalid warmup_epochs: {warmup_epochs!r} (must be an integer >= 1)"
        )
    if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs <= warmup_epochs:
        raise ArgumentError(
            "total_epochs",
            f"Invalid total_epochs: {total_epochs!r} (must be an integer > warmup_epochs = {warmup_epochs})",
        )
    _check(
        "start_factor", start_factor, _number(start_factor) and 0 < start_factor <= 1, "a number in (0, 1]"
    )
    _check("eta_min", eta_min, _number(eta_min) and eta_min >= 0, "a number >= 0")
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_epochs)
    decay = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_epochs - warmup_epochs, eta_min=eta_min)
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_epochs])
