"""Is this run "the linear model on the data's features, trained on MSE"? If so, its closed form applies.

Detected from what the module computes, not from class names: the trainable parameters must be one
``(k, d)`` matrix (plus an optional ``(k,)`` bias) for ``d`` input features and ``k`` outputs, the
network's output on real training inputs must equal ``x W^T + b``, and the loss must equal the mean
squared error. Then the datamodule's ``closed_form()`` (least squares, Hessian, critical learning
rate) describes exactly the problem gradient descent is solving.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import lightning as L
import torch
from torch import Tensor

from gdlab.analysis import Reference


@dataclass
class LinearView:
    """The live parameters of a linear model and the closed-form facts about its problem.

    ``reference`` and ``true_theta`` stay on the CPU (for pictures); the per-step quantities use
    copies made once on the parameters' device, so no step copies anything between host and device.
    """

    weight: Tensor  # the (k, d) parameter itself (W in y_hat = x W^T + b)
    bias: Tensor | None  # the (k,) parameter, or None for a model without bias
    reference: Reference  # least squares on the train split (w* is (d, k), b* is (k,))
    true_theta: Tensor | None  # the generating parameters [w*; b*] (float64, (d [+1], k)), when known

    def __post_init__(self) -> None:
        device, self.dtype = self.weight.device, exact_dtype(self.weight.device)
        ref = self.reference
        self.device_reference = replace(
            ref,
            w=ref.w.to(device=device, dtype=self.dtype),
            b=ref.b.to(device=device, dtype=self.dtype),
            hessian=ref.hessian.to(device=device, dtype=self.dtype),
        )
        optimum = ref.w if not ref.bias else torch.cat([ref.w, ref.b.unsqueeze(0)], dim=0)
        self.device_optimum = optimum.to(device=device, dtype=self.dtype)
        truth = self.true_theta
        self.device_truth = None if truth is None else truth.to(device=device, dtype=self.dtype)

    def theta(self) -> tuple[Tensor, Tensor | None]:
        """The current ``(w, b)`` in the reference's layout (``w`` is ``(d, k)``), detached, exact dtype."""
        w = self.weight.detach().T.to(self.dtype)
        return w, None if self.bias is None else self.bias.detach().to(self.dtype)

    def flat(self) -> Tensor:
        """``[w; b]`` stacked as one ``(d [+1], k)`` tensor."""
        w, b = self.theta()
        return w if b is None else torch.cat([w, b.unsqueeze(0)], dim=0)


def exact_dtype(device: torch.device) -> torch.dtype:
    """float64 where the device has it (MPS does not): reference numbers want it."""
    return torch.float32 if device.type == "mps" else torch.float64


def linear_view(trainer: L.Trainer, pl_module: L.LightningModule, n_check: int = 16) -> LinearView | None:
    """The :class:`LinearView` of this run, or ``None`` when the closed form does not describe it."""
    datamodule = trainer.datamodule
    if datamodule is None or not callable(getattr(datamodule, "closed_form", None)):
        return None
    if getattr(datamodule, "task", None) != "regression" or not getattr(datamodule, "splits", None):
        return None
    x, y = datamodule.splits["train"]
    d, k = math.prod(x.shape[1:]), (y.shape[1] if y.ndim > 1 else 1)
    params = [p for p in pl_module.parameters() if p.requires_grad]
    matrices = [p for p in params if p.shape == (k, d)]
    vectors = [p for p in params if p.shape == (k,)]
    if len(matrices) != 1 or len(vectors) > 1 or len(params) != len(matrices) + len(vectors):
        return None
    weight, bias = matrices[0], (vectors[0] if vectors else None)
    try:
        with torch.no_grad():
            xb = x[:n_check].to(device=weight.device, dtype=weight.dtype)
            yb = y[:n_check].to(device=weight.device, dtype=weight.dtype)
            pred = pl_module(xb)
            linear = xb.flatten(1) @ weight.T + (0 if bias is None else bias)
            if pred.shape != linear.shape and pred.numel() == linear.numel():
                pred = pred.reshape(linear.shape)
            if not torch.allclose(pred, linear, rtol=1e-4, atol=1e-5):
                return None  # e.g. a nonlinearity after the linear layer
            loss_fn = getattr(pl_module, "loss_fn", None)
            if loss_fn is None:
                return None
            loss = loss_fn(pred.reshape(yb.shape), yb)
            mse = ((pred.reshape(yb.shape) - yb) ** 2).mean()
            if not torch.allclose(loss, mse, rtol=1e-4, atol=1e-7):
                return None  # the closed form is for MSE only
    except (RuntimeError, TypeError, ValueError):
        return None  # the module cannot be called this way: not the plain linear model
    reference = datamodule.closed_form(bias=bias is not None)
    if reference is None:
        return None
    return LinearView(weight, bias, reference, _true_theta(datamodule, d, k, bias is not None))


def _true_theta(datamodule: object, d: int, k: int, bias: bool) -> Tensor | None:
    """``[w*; b*]`` from ``datamodule.true_weights()`` (the truth in the model's basis) when it has one
    that fits the model's shapes."""
    true_weights = getattr(datamodule, "true_weights", None)
    if not callable(true_weights):
        return None
    truth = true_weights()
    w, b = truth.get("w"), truth.get("b")
    if w is None or w.numel() != d * k:
        return None
    w = w.double().reshape(d, k)
    if not bias:
        return w
    b = torch.zeros(k, dtype=torch.float64) if b is None else b.double().reshape(k)
    return torch.cat([w, b.unsqueeze(0)], dim=0)
