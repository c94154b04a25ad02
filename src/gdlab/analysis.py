"""Closed forms for the linear model ``y_hat = X w + b`` under ``L = 1/m * sum (y - y_hat)^2``, and
back-propagation written out.

The one place the mathematics lives: least squares, the analytic gradient, the Hessian, its
spectrum and the critical learning rate of full-batch gradient descent; the mean cross-entropy's
gradient; the backward pass of a one-hidden-layer network by the chain rule. Pure torch; pass float64
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
    solution on CPU. There the SVD driver ``gelsd`` gives the same bits for the same data in every process;
    lstsq's default ``gelsy`` (QR with column pivoting) on MKL varies in the last digits with where the
    tensors lie in memory, and so did the diagnostics of two runs with the same seed.
    """
    A = design_matrix(X, bias)
    target = y.unsqueeze(1) if y.ndim == 1 else y
    driver = "gelsd" if A.device.type == "cpu" else None  # CUDA has one driver (gels)
    theta = torch.linalg.lstsq(A, target, driver=driver).solution
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


# --- Cross-entropy and back-propagation through one hidden layer -------------------------------------
# The same conventions as above: ``X`` is ``(m, d)``, a layer computes ``X W + b`` with ``W`` of shape
# ``(in, out)`` (``nn.Linear`` stores the transpose: pass ``layer.weight.T``), losses are means over ``m``.


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """``L = -1/m * sum_i log softmax(logits_i)[y_i]`` for integer classes ``y`` of shape ``(m,)``."""
    return -(logits.log_softmax(dim=1).gather(1, y.unsqueeze(1))).mean()


def cross_entropy_logit_gradient(logits: Tensor, y: Tensor) -> Tensor:
    """``dL/dlogits = (softmax(logits) - onehot(y)) / m``: the mean cross-entropy's gradient, ``(m, k)``.

    Per sample, ``d(-log softmax(z)[y])/dz_j = softmax(z)_j - [j = y]``; the mean over ``m`` divides by
    ``m`` (no class weights, no label smoothing: ``torch.nn.CrossEntropyLoss()``'s defaults).
    """
    one_hot = torch.nn.functional.one_hot(y, num_classes=logits.shape[1]).to(logits.dtype)
    return (logits.softmax(dim=1) - one_hot) / len(logits)


def cross_entropy_gradient(w: Tensor, b: Tensor, X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The analytic gradient of the mean cross-entropy of a linear layer's logits ``X w + b``.

    With ``G = (softmax(X w + b) - onehot(y)) / m``: ``dL/dw = X^T G`` ``(d, k)`` and ``dL/db = sum_i G_i``
    ``(k,)``, the same shape of formula as :func:`mse_gradient` with the residual replaced by ``G``.
    """
    G = cross_entropy_logit_gradient(predict(w, b, X), y)
    return X.T @ G, G.sum(dim=0)


def mse_logit_gradient(outputs: Tensor, y: Tensor) -> Tensor:
    """``dL/doutputs = (2/(m k)) (outputs - y)`` for ``L`` the mean over all ``m * k`` squared errors.

    Integer class targets ``(m,)`` are one-hot encoded first, as ``gdlab.losses.MSELoss`` does.
    """
    return 2.0 * (outputs - _mse_targets(outputs, y)) / outputs.numel()


def _mse_targets(outputs: Tensor, y: Tensor) -> Tensor:
    if y.is_floating_point():
        return y
    return torch.nn.functional.one_hot(y, num_classes=outputs.shape[1]).to(outputs.dtype)


def _sigmoid_derivative(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 - s)


def _gelu(z: Tensor) -> Tensor:
    return 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))


def _gelu_derivative(z: Tensor) -> Tensor:
    density = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)  # of the standard normal
    return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * density


def _silu_derivative(z: Tensor) -> Tensor:
    s = torch.sigmoid(z)
    return s * (1 + z * (1 - s))


# name (as ``model.activation`` takes it) -> (act, act'): the activations gdlab's MLP offers, with torch's
# default arguments (LeakyReLU's slope 0.01, ELU's alpha 1, exact GELU) and ReLU'(0) = 0 as autograd has it.
ACTIVATIONS = {
    "ReLU": (torch.relu, lambda z: (z > 0).to(z.dtype)),
    "Tanh": (torch.tanh, lambda z: 1 - torch.tanh(z) ** 2),
    "Sigmoid": (torch.sigmoid, _sigmoid_derivative),
    "LeakyReLU": (
        lambda z: torch.where(z > 0, z, 0.01 * z),
        lambda z: torch.where(z > 0, 1.0, torch.full_like(z, 0.01)),
    ),
    "ELU": (lambda z: torch.where(z > 0, z, torch.expm1(z)), lambda z: torch.where(z > 0, 1.0, torch.exp(z))),
    "SiLU": (lambda z: z * torch.sigmoid(z), _silu_derivative),
    "GELU": (_gelu, _gelu_derivative),
}


class Backprop(NamedTuple):
    """One forward and backward pass through ``Linear -> activation -> Linear``: the forward caches
    (``z``, ``h``, ``logits``, ``loss``) and the gradient of the loss with respect to each of them and to
    each parameter (``d_<name>``, the shape of ``<name>``)."""

    z: Tensor
    h: Tensor
    logits: Tensor
    loss: Tensor
    d_logits: Tensor
    d_W2: Tensor
    d_b2: Tensor
    d_h: Tensor
    d_z: Tensor
    d_W1: Tensor
    d_b1: Tensor


def backprop(
    W1: Tensor,
    b1: Tensor,
    W2: Tensor,
    b2: Tensor,
    X: Tensor,
    y: Tensor,
    loss: str = "mse",
    activation: str = "ReLU",
) -> Backprop:
    """Back-propagation through a one-hidden-layer network, written out layer by layer.

    Forward, keeping what the backward pass needs::

        z = X W1 + b1   (m, n)     h = act(z)   (m, n)     logits = h W2 + b2   (m, k)

    Backward, the chain rule from the loss down (``*`` is the elementwise product)::

        dL/dlogits = (2/(m k)) (logits - y)          loss="mse" (mean over all m*k entries)
                   = (softmax(logits) - onehot(y)) / m   loss="cross_entropy" (mean over m)
        dL/dW2 = h^T dL/dlogits      dL/db2 = sum_i dL/dlogits_i
        dL/dh  = dL/dlogits W2^T
        dL/dz  = dL/dh * act'(z)
        dL/dW1 = X^T dL/dz           dL/db1 = sum_i dL/dz_i

    ``W1`` is ``(d, n)``, ``b1`` ``(n,)``, ``W2`` ``(n, k)``, ``b2`` ``(k,)``; ``y`` is ``(m, k)`` floats
    for MSE (or ``(m,)`` classes, one-hot encoded as ``gdlab.losses.MSELoss`` does) and ``(m,)`` classes
    for cross-entropy. ``activation`` is the name ``model.activation`` takes (see ``ACTIVATIONS``).
    """
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"Invalid loss: {loss!r} (expected 'mse' or 'cross_entropy')")
    if activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation: {activation!r} (expected one of {', '.join(ACTIVATIONS)})")
    act, act_derivative = ACTIVATIONS[activation]
    z = X @ W1 + b1
    h = act(z)
    logits = h @ W2 + b2
    if loss == "mse":
        value = ((logits - _mse_targets(logits, y)) ** 2).mean()
        d_logits = mse_logit_gradient(logits, y)
    else:
        value = cross_entropy(logits, y)
        d_logits = cross_entropy_logit_gradient(logits, y)
    d_h = d_logits @ W2.T
    d_z = d_h * act_derivative(z)
    return Backprop(
        z=z,
        h=h,
        logits=logits,
        loss=value,
        d_logits=d_logits,
        d_W2=h.T @ d_logits,
        d_b2=d_logits.sum(dim=0),
        d_h=d_h,
        d_z=d_z,
        d_W1=X.T @ d_z,
        d_b1=d_z.sum(dim=0),
    )
