"""PlainSGD: gradient descent and nothing else, ``W <- W - lr * grad L(W)``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from gdlab.errors import ArgumentError, ArgumentTypeError


def check_lr(lr: Any) -> float:
    """``lr`` as a float; a ValueError (TypeError for a non-number) in torch's words otherwise."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        raise ArgumentTypeError("lr", f"Invalid learning rate: {lr!r} (must be a number)")
    if not math.isfinite(lr) or lr <= 0:
        raise ArgumentError("lr", f"Invalid learning rate: {lr} (must be finite and > 0)")
    return float(lr)


class PlainSGD(Optimizer):
    """Plain gradient descent: every parameter with a gradient moves by ``-lr * grad``.

    No momentum, no weight decay, no dampening. Results are bitwise identical to
    ``torch.optim.SGD(params, lr)``, and a step is one ``torch._foreach_add_`` call per param group
    instead of one Python-level call per parameter tensor.
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float) -> None:
        super().__init__(params, {"lr": check_lr(lr)})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "lr" in param_group:
            param_group["lr"] = check_lr(param_group["lr"])
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Take one step; ``closure`` (re-evaluates the loss with gradients) is optional."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = [], []
            for p in group["params"]:  # one pass: this loop is most of the Python cost of a step
                grad = p.grad
                if grad is not None:
                    if grad.is_sparse:
                        raise RuntimeError(
                            "PlainSGD does not support sparse gradients; use dense parameters."
                        )
                    params.append(p)
                    grads.append(grad)
            if params:
                # p <- p + (-lr) * g, the same arithmetic as torch.optim.SGD's p.add_(g, alpha=-lr). One call
                # for the whole group: lists mixing devices or dtypes take foreach's per-tensor fallback.
                torch._foreach_add_(params, grads, alpha=-group["lr"])
        return loss
