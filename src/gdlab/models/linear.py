"""The linear model ``y_hat = X w + b`` (images are flattened: softmax regression with cross-entropy)."""

from __future__ import annotations

import math

from torch import Tensor, nn


class LinearModel(nn.Module):
    """One ``nn.Linear`` from the flattened input to ``num_outputs``; sizes come from the data."""

    def __init__(
        self, input_shape: tuple[int, ...], num_outputs: int, bias: bool = True, init: float | None = None
    ) -> None:
        super().__init__()
        self.flatten = nn.Flatten() if len(input_shape) > 1 else nn.Identity()
        self.linear = nn.Linear(math.prod(input_shape), num_outputs, bias=bias)
        if init is not None:  # every weight and the bias start at `init` (the textbook start is 0.5)
            for p in self.linear.parameters():
                nn.init.constant_(p, float(init))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))
