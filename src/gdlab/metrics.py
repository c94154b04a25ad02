"""Torchmetrics per task: what a regression or classification run reports besides its loss."""

from __future__ import annotations

from collections.abc import Callable

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
