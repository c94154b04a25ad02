"""Callbacks that make gradient descent visible: per-step diagnostics, pictures, the divergence guard."""

from gdlab.callbacks.diagnostics import GradientDiagnostics
from gdlab.callbacks.guard import DivergenceGuard
from gdlab.callbacks.pictures import DescentPictures

__all__ = ["DescentPictures", "DivergenceGuard", "GradientDiagnostics"]
