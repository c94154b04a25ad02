"""Learning-rate schedules that torch builds from parts: each a factory called with the optimizer.

The single-part ones (``StepLR``, ``CosineAnnealingLR``, ``ReduceLROnPlateau``) are configured directly by
their ``_target_`` in ``conf/scheduler/``; only compositions live here, made of torch's own schedulers.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

from gdlab.errors import ArgumentError


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
    warmup = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup_epochs)
    decay = CosineAnnealingLR(optimizer, T_max=total_epochs - warmup_epochs, eta_min=eta_min)
    return SequentialLR(optimizer, [warmup, decay], milestones=[warmup_epochs])
