"""Closed forms for the linear model ``y_hat = X w + b`` under ``L = 1/m * sum (y - y_hat)^2``.

The one place the mathematics lives: least squares, the analytic gradient, the Hessian, its
spectrum and the critical learning rate of full-batch gradient descent. Pure torch; pass float64
tensors for reference-quality numbers (every function computes in the dtype it is given).

Shapes: ``X`` is ``(m, d)``; ``y`` is ``(m,)`` (then ``w`` is ``(d,)`` and ``b`` a scalar) or
``(m, k)`` for ``k`` outputs (then ``w`` is ``(d, k)``, ``b`` is ``(k,)`` and the loss is the mean
over all ``m * k`` entries, as ``torch.nn.MSELoss`` computes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


class LeastSquares(NamedTuple):
    """The least-squares optimum ``(w, b)`` and its loss ``L*``."""

    w: Tensor
    b: Tensor
    loss: Tensor


def design_matrix(X: Tensor, bias: bool = True) -> Tensor:
    """``[X 1]``: the features with a column of ones appended (``X`` itself when ``bias=False``)."""
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D (samples, features) tensor, got shape {tuple(X.shape)}")
    if not bias:
        return X
    return torch.cat([X, torch.ones(len(X), 1, dtype=X.dtype, device=X.device)], dim=1)


def predict(w: Tensor, b: Tensor | float, X: Tensor) -> Tensor:
    """``X w + b``."""
    return X @ w + b


def mse_loss(w: Tensor, b: Tensor | float, X: Tensor, y: Tensor) -> Tensor:
    """``L = 1/m * sum (y - (X w + b))^2`` (mean over all entries for several outputs)."""
    return ((y - predict(w, b, X)) ** 2).mean()


def least_squares(X: Tensor, y: Tensor, bias: bool = True) -> LeastSquares:
    """The minimiser ``(w, b)`` of the MSE and its loss ``L*``, via ``torch.linalg.lstsq`` on ``[X 1]``.

    ``bias=False`` fits ``y = X w`` (then ``b`` is zero). Rank-deficient ``X`` gets the minimum-norm
    solution on CPU (lstsq's default driver there handles it).
    """
    A = design_matrix(X, bias)
    target = y.unsqueeze(1) if y.ndim == 1 else y
    theta = torch.linalg.lstsq(A, target).solution
    w = theta[: X.shape[1]]
    b = theta[X.shape[1]] if bias else torch.zeros(target.shape[1], dtype=X.dtype, device=X.device)
    if y.ndim == 1:
        w, b = w.squeeze(1), b.squeeze(0)
    return LeastSquares(w, b, mse_loss(w, b, X, y))


def mse_gradient(w: Tensor, b: Tensor | float, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The analytic gradient of ``L = 1/m * sum (y - y_hat)^2``.

    ``dL/dw = -(2/m) X^T (y - y_hat)`` and ``dL/db = -(2/m) sum (y - y_hat)``: the chain rule brings
    down the factor 2 and the inner derivative ``d(y - Xw - b)/dw = -X`` (the input ``x``, not the
    learning rate ``alpha`` some lecture notes write there). With ``k`` outputs ``m`` is ``m * k``.
    """
    residual = y - predict(w, b, X)
    scale = -2.0 / residual.numel()
    return scale * (X.T @ residual), scale * residual.sum(dim=0)


def hessian(X: Tensor, bias: bool = True) -> Tensor:
    """``2/m * [X 1]^T [X 1]``: the (constant) Hessian of the MSE in ``(w, b)``, ``(d+1, d+1)``.

    For ``k`` outputs the loss (a mean over ``m * k`` entries) has this block ``/ k`` for each output.
    """
    A = design_matrix(X, bias)
    return (2.0 / len(A)) * (A.T @ A)


def eigenvalues(X: Tensor, bias: bool = True) -> Tensor:
    """The Hessian's eigenvalues, ascending (it is symmetric positive semi-definite)."""
    return torch.linalg.eigvalsh(hessian(X, bias))


def lambda_max(X: Tensor, bias: bool = True) -> Tensor:
    """The largest Hessian eigenvalue: the curvature along the steepest direction."""
    return eigenvalues(X, bias)[-1]


def condition_number(X: Tensor, bias: bool = True) -> Tensor:
    """``lambda_max / lambda_min`` of the Hessian (``inf`` when it is singular).

    Full-batch GD at a stable step shrinks the error along eigenvector ``i`` by ``|1 - lr lambda_i|``
    per step, so the slowest direction needs about ``condition_number`` times more steps.
    """
    ev = eigenvalues(X, bias)
    if ev[0] <= ev[-1] * torch.finfo(ev.dtype).eps * len(ev):
        return torch.tensor(math.inf, dtype=ev.dtype, device=ev.device)
    return ev[-1] / ev[0]


def critical_learning_rate(X: Tensor, bias: bool = True, num_outputs: int = 1) -> Tensor:
    """``2 / lambda_max``: full-batch GD on this quadratic converges for ``lr`` below it, diverges above.

    (Along the top eigenvector the error is multiplied by ``1 - lr * lambda_max`` each step, whose
    magnitude exceeds 1 exactly when ``lr > 2 / lambda_max``.) With ``k`` outputs the loss is
    averaged over ``k`` too, so the curvature is ``k`` times smaller and the critical rate ``k`` times
    larger.
    """
    return num_outputs * 2.0 / lambda_max(X, bias)


@dataclass(frozen=True)
class Reference:
    """Everything the closed form says about linear least squares on one training set (float64).

    ``w`` is ``(d, k)``, ``b`` is ``(k,)`` (zeros without bias); ``hessian`` is the per-output block.
    """

    w: Tensor
    b: Tensor
    loss: float
    hessian: Tensor
    lambda_max: float
    lambda_min: float
    condition_number: float
    critical_lr: float
    bias: bool

    def loss_at(self, w: Tensor, b: Tensor | None) -> Tensor:
        """The exact training loss at ``(w, b)`` (shapes as ``w``, ``b`` here), without touching the data.

        The MSE is quadratic, so ``L(theta) = L* + 1/(2k) * sum_j (theta_j - theta*_j)^T H (theta_j -
        theta*_j)``: exact, and the gap ``L - L*`` stays accurate (>= 0) even when it is far below
        float32's resolution of ``L`` itself.
        """
        return self.loss + self.gap_at(w, b)

    def gap_at(self, w: Tensor, b: Tensor | None) -> Tensor:
        """``L(w, b) - L*`` from the quadratic form (see :meth:`loss_at`); works on any device/dtype."""
        H = self.hessian.to(device=w.device, dtype=w.dtype)
        delta = w - self.w.to(device=w.device, dtype=w.dtype)
        if self.bias:
            delta = torch.cat([delta, (b - self.b.to(device=w.device, dtype=w.dtype)).unsqueeze(0)], dim=0)
        return 0.5 * (delta * (H @ delta)).sum() / delta.shape[1]


def reference(X: Tensor, y: Tensor, bias: bool = True) -> Reference:
    """Least squares, Hessian spectrum and critical learning rate of ``(X, y)``, computed in float64."""
    X, y = X.double(), y.double()
    y2 = y.unsqueeze(1) if y.ndim == 1 else y
    w, b, loss = least_squares(X, y2, bias)
    H = hessian(X, bias)
    ev = torch.linalg.eigvalsh(H)
    k = y2.shape[1]
    lmax, lmin = float(ev[-1]), float(ev[0])
    return Reference(
        w=w,
        b=b,
        loss=float(loss),
        hessian=H,
        lambda_max=lmax / k,
        lambda_min=lmin / k,
        condition_number=float(condition_number(X, bias)),
        critical_lr=float(critical_learning_rate(X, bias, num_outputs=k)),
        bias=bias,
    )
