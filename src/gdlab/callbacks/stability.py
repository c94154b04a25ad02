"""The largest stable learning rate of the configured step rule on the linear model's quadratic loss.

Along a Hessian eigenvector of eigenvalue ``lambda`` each rule is a linear recursion whose error stays
bounded exactly when ``lr`` is below (``m`` the momentum, ``wd`` torch's coupled weight decay, which
adds ``wd`` to every eigenvalue):

- plain gradient descent (``PlainSGD``, ``torch.optim.SGD`` without momentum): ``2 / lambda_max``;
- heavy ball (``SGD(momentum=m)``, dampening ``d``): ``2 (1 + m) / ((1 - d) lambda_max)``;
- Nesterov (``SGD(momentum=m, nesterov=True)``): ``2 (1 + m) / ((1 + 2 m) lambda_max)``.

Adaptive rules (Adam, AdamW, ...) scale each coordinate by the gradient's history: no such bound, and
gdlab states none for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gdlab.optim import PlainSGD


@dataclass(frozen=True)
class StabilityBound:
    """``critical_lr`` of the step rule and how it follows from ``lambda_max`` (``formula``)."""

    critical_lr: float
    formula: str
    rule: str  # "GD", "heavy ball", "Nesterov": what converges below the bound


def stability_bound(optimizer: torch.optim.Optimizer, gd_critical_lr: float) -> StabilityBound | None:
    """The bound for ``optimizer`` (its first param group) given plain GD's ``2 / lambda_max``; None when
    the rule has none (adaptive rules, or an optimizer gdlab does not know)."""
    group = optimizer.param_groups[0]
    if isinstance(optimizer, PlainSGD):
        return StabilityBound(gd_critical_lr, "2/lambda_max", "GD")
    if type(optimizer) is not torch.optim.SGD or group.get("maximize"):
        return None
    wd = float(group.get("weight_decay", 0.0))
    m, d = float(group.get("momentum", 0.0)), float(group.get("dampening", 0.0))
    lam = 2.0 / gd_critical_lr + wd  # the curvature (per output) the rule sees
    curvature = "(lambda_max + weight_decay)" if wd else "lambda_max"
    if m == 0:
        return StabilityBound(2.0 / lam, f"2/{curvature}", "GD")
    if group.get("nesterov"):
        return StabilityBound(
            2.0 * (1 + m) / ((1 + 2 * m) * lam), f"2(1+m)/((1+2m) {curvature}), m={m:g}", "Nesterov"
        )
    if d >= 1:
        return None
    scale = f"(1-d) {curvature}, d={d:g}" if d else curvature
    return StabilityBound(2.0 * (1 + m) / ((1 - d) * lam), f"2(1+m)/{scale}, m={m:g}", "heavy ball")
