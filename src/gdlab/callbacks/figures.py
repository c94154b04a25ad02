"""The pictures of gradient descent, drawn from tensors: the fit, the loss landscape, a confusion matrix.

matplotlib is imported inside each function (start-up time matters) and used through its
object-oriented API with the Agg canvas: no pyplot, no global backend switch, no display needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from gdlab.analysis import Reference


def new_figure(width: float = 5.0, height: float = 4.0) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_rgb(fig: Figure) -> np.ndarray:
    """The rendered figure as an ``(H, W, 3)`` uint8 array (what TensorBoard's ``add_image`` takes)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an already rendered image as PNG (encoding only: ``fig.savefig`` would render again)."""
    from matplotlib.image import imsave

    imsave(path, image)


def draw_fit(x: Tensor, y: Tensor, x_grid: Tensor, y_grid: Tensor, title: str) -> Figure:
    """1-feature regression: the data as a scatter, the model's current prediction as a line or curve."""
    fig = new_figure()
    ax = fig.add_subplot()
    ax.scatter(x.reshape(-1).numpy(), y.reshape(-1).numpy(), s=8, alpha=0.5, label="train data")
    ax.plot(x_grid.reshape(-1).numpy(), y_grid.reshape(-1).numpy(), color="C3", lw=2, label="model")
    ax.set(xlabel="x", ylabel="y", title=title)
    ax.legend(loc="best")
    return fig


def draw_landscape(reference: Reference, trajectory: Tensor, title: str, n_grid: int = 121) -> Figure:
    """Contours of ``L(w, b)`` for a 1-feature linear model, the GD path ``trajectory`` (``(T, 2)``) on
    them, the start and the least-squares optimum. The loss is the exact quadratic
    ``L* + 1/2 (theta - theta*)^T H (theta - theta*)``, so no pass over the data is needed."""
    opt = torch.cat([reference.w.reshape(-1), reference.b.reshape(-1)]).double()
    path = trajectory.double()
    finite = path[torch.isfinite(path).all(dim=1)]
    # Frame the optimum and the path, but not a diverged path's far end: at most 3x the start's distance.
    start = finite[0] if len(finite) else opt + 1.0
    reach = max(float((start - opt).abs().max()), 1e-3)
    shown = finite[((finite - opt).abs() <= 3 * reach).all(dim=1)]
    span = torch.maximum(
        (torch.cat([shown, opt[None]]) - opt).abs().amax(dim=0) * 1.15, torch.full((2,), reach * 0.2)
    )
    w_axis = torch.linspace(float(opt[0] - span[0]), float(opt[0] + span[0]), n_grid, dtype=torch.float64)
    b_axis = torch.linspace(float(opt[1] - span[1]), float(opt[1] + span[1]), n_grid, dtype=torch.float64)
    W, B = torch.meshgrid(w_axis, b_axis, indexing="xy")
    delta = torch.stack([W - opt[0], B - opt[1]], dim=-1)
    gap = 0.5 * ((delta @ reference.hessian.double()) * delta).sum(dim=-1)  # the quadratic form per point
    # Levels on a log scale of the gap L - L*: equally spaced ellipses would crowd the outside.
    top = float(gap.max())
    levels = reference.loss + np.geomspace(max(top * 1e-4, 1e-12), top, 14)
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot()
    contours = ax.contour(W.numpy(), B.numpy(), (reference.loss + gap).numpy(), levels=levels, cmap="viridis")
    fig.colorbar(contours, ax=ax, label="training loss L(w, b)")
    if len(shown):
        ax.plot(
            shown[:, 0].numpy(), shown[:, 1].numpy(), "-o", color="C3", ms=2.5, lw=1, label="gradient descent"
        )
        ax.plot(float(shown[0, 0]), float(shown[0, 1]), "s", color="C3", ms=7, label="start")
    ax.plot(float(opt[0]), float(opt[1]), "*", color="k", ms=14, label="least squares")
    ax.set(xlabel="w", ylabel="b", title=title)
    ax.legend(loc="best", fontsize=8)
    return fig


def confusion_matrix(preds: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Counts ``C[i, j]`` of samples of true class ``i`` predicted as ``j`` (one ``bincount``)."""
    index = target.reshape(-1).long() * num_classes + preds.reshape(-1).long()
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def draw_confusion(matrix: Tensor, title: str) -> Figure:
    """The confusion matrix as an image, with the counts written in when there are few classes."""
    k = matrix.shape[0]
    fig = new_figure(4.5 + 0.15 * k, 4.0 + 0.15 * k)
    ax = fig.add_subplot()
    image = ax.imshow(matrix.numpy(), cmap="Blues")
    fig.colorbar(image, ax=ax, label="samples")
    if k <= 20:
        threshold = float(matrix.max()) / 2
        for i in range(k):
            for j in range(k):
                count = int(matrix[i, j])
                ax.text(
                    j,
                    i,
                    str(count),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if count > threshold else "black",
                )
    ax.set(xlabel="predicted class", ylabel="true class", title=title, xticks=range(k), yticks=range(k))
    return fig
