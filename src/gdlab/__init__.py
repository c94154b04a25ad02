"""gdlab: a PyTorch Lightning + Hydra template built around gradient descent."""

__version__ = "0.1.0"
