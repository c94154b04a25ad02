"""The losses gradient descent minimises, each declaring which data it fits (``tasks``).

``gdlab.validate`` reads ``tasks`` at start-up, so ``loss=cross_entropy`` on regression data fails
before training instead of deep inside torch.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn
from torch.nn import functional as F


class MSELoss(nn.MSELoss):
    """``L = 1/m * sum (y - y_hat)^2``; integer class targets are one-hot encoded first.

    On classification data the model outputs one score per class and the target is the one-hot
    vector of the true class: "least squares classification", the comparison with cross-entropy
    that lecture notes make (the mean then runs over all ``m * num_classes`` entries, torch's
    convention). Float targets (regression) are used as they are.
    """

    tasks: ClassVar[tuple[str, ...]] = ("regression", "classification")

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        if not target.is_floating_point():
            target = F.one_hot(target, num_classes=input.shape[-1]).to(input.dtype)
        return super().forward(input, target)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``L = -1/m * sum log softmax(y_hat)[y]`` over integer class targets (classification only)."""

    tasks: ClassVar[tuple[str, ...]] = ("classification",)
