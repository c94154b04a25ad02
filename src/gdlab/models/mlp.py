"""A multilayer perceptron with configurable hidden sizes and activation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from gdlab.errors import ArgumentError


def activation_class(name: str) -> type[nn.Module]:
    """The ``torch.nn`` activation class called ``name`` (e.g. ``ReLU``, ``Tanh``, ``GELU``)."""
    cls = getattr(nn, name, None)
    if (
        not (isinstance(cls, type) and issubclass(cls, nn.Module))
        or cls.__module__ != "torch.nn.modules.activation"
    ):
        choices = "ReLU, Tanh, Sigmoid, GELU, SiLU, LeakyReLU, ELU"
        raise ArgumentError(
            "activation", f"Invalid activation: {name!r} is not a torch.nn activation (e.g. {choices})"
        )
    return cls


class MLP(nn.Module):
    """``Linear -> activation`` for each hidden size, then a linear output layer."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "ReLU",
    ) -> None:
        super().__init__()
        act = activation_class(activation)
        if len(hidden_sizes) == 0:
            raise ArgumentError(
                "hidden_sizes",
                "Invalid hidden_sizes: [] (an MLP needs at least one hidden layer; model=linear is "
                "the network without one)",
            )
        if any(int(h) < 1 for h in hidden_sizes):
            raise ArgumentError(
                "hidden_sizes", f"Invalid hidden_sizes: {list(hidden_sizes)} (each must be >= 1)"
            )
        layers: list[nn.Module] = [nn.Flatten()] if len(input_shape) > 1 else []
        width = math.prod(input_shape)
        for h in hidden_sizes:
            layers += [nn.Linear(width, int(h)), act()]
            width = int(h)
        layers.append(nn.Linear(width, num_outputs))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
