"""Callbacks: the per-step log every value goes through, the ones that make gradient descent visible
(diagnostics, pictures, the divergence guard), and a progress display suited to where the output goes."""

from gdlab.callbacks.diagnostics import GradientDiagnostics
from gdlab.callbacks.guard import DivergenceGuard
from gdlab.callbacks.pictures import DescentPictures
from gdlab.callbacks.progress import ProgressBar
from gdlab.callbacks.steplog import StepLog

__all__ = ["DescentPictures", "DivergenceGuard", "GradientDiagnostics", "ProgressBar", "StepLog"]
