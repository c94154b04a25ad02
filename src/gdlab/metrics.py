"""Torchmetrics per task: what a regression or classification run reports besides its loss."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor
from torchmetrics import MeanSquaredError, MetricCollection, R2Score
from torchmetrics.classification import MulticlassAccuracy


def regression_metrics(num_outputs: int) -> MetricCollection:
    return MetricCollection({"mse": MeanSquaredError(num_outputs=num_outputs), "r2": R2Score()})


def classification_metrics(num_outputs: int) -> MetricCollection:
    return MetricCollection({"acc": MulticlassAccuracy(num_classes=num_outputs, average="micro")})


METRICS: dict[str, Callable[[int], MetricCollection]] = {
    "regression": regression_metrics,
    "classification": classification_metrics,
}


def build_metrics(task: str, num_outputs: int) -> MetricCollection:
    """The metric collection for ``task``, with a clear error for an unknown task."""
    if task not in METRICS:
        raise ValueError(f"unknown task {task!r}: expected one of {sorted(METRICS)}")
    return METRICS[task](num_outputs)


def metric_inputs(task: str, preds: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``(preds, targets)`` as the task's metrics take them: class scores and labels, or regression values
    with a single output's trailing dimension dropped."""
    if task == "classification" or preds.shape[-1] != 1:
        return preds, targets
    return preds.squeeze(-1), targets.squeeze(-1)
