"""A small convolutional network for (C, H, W) images whose layer sizes follow the data."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from gdlab.errors import ArgumentError
from gdlab.models.mlp import activation_class


class CNN(nn.Module):
    """``[Conv3x3 -> activation -> MaxPool2]`` per entry of ``channels``, then ``Linear -> act -> Linear``.

    Padding keeps each convolution's spatial size; a block pools (halves H and W) only while both
    are still >= 2, so the same config fits 8x8 digits and 28x28 MNIST. The flattened size is
    measured with one dry forward pass, never hand-computed.
    """

    # Accepts only per-sample inputs of 3 dimensions (C, H, W); gdlab.validate checks it at start-up.
    input_ndim: ClassVar[int] = 3

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int = 3,
        hidden_size: int = 64,
        activation: str = "ReLU",
    ) -> None:
        super().__init__()
        if len(input_shape) != self.input_ndim:
            raise ArgumentError(
                "input_shape", f"Invalid input_shape: {tuple(input_shape)} (the CNN needs images: C, H, W)"
            )
        if not channels or any(int(c) < 1 for c in channels):
            raise ArgumentError(
                "channels", f"Invalid channels: {list(channels)} (must be a non-empty list of integers >= 1)"
            )
        if int(kernel_size) < 1 or int(kernel_size) % 2 == 0:
            raise ArgumentError(
                "kernel_size", f"Invalid kernel_size: {kernel_size} (must be an odd integer >= 1)"
            )
        if int(hidden_size) < 1:
            raise ArgumentError("hidden_size", f"Invalid hidden_size: {hidden_size} (must be >= 1)")
        act = activation_class(activation)
        in_ch, (h, w) = int(input_shape[0]), input_shape[1:]
        layers: list[nn.Module] = []
        for c in channels:
            layers += [nn.Conv2d(in_ch, int(c), int(kernel_size), padding=int(kernel_size) // 2), act()]
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            in_ch = int(c)
        self.features = nn.Sequential(*layers)
        with torch.no_grad():  # the dry run draws no random numbers: seeding stays as without it
            n_flat = math.prod(self.features(torch.zeros(1, *input_shape)).shape[1:])
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(n_flat, int(hidden_size)), act(), nn.Linear(int(hidden_size), num_outputs)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))
