"""Networks. Each takes ``input_shape`` and ``num_outputs`` from the datamodule, the rest from config."""

from gdlab.models.cnn import CNN
from gdlab.models.linear import LinearModel
from gdlab.models.mlp import MLP

__all__ = ["CNN", "MLP", "LinearModel"]
