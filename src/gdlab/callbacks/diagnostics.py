"""Per-step diagnostics of gradient descent: norms, step sizes and, where the closed form applies,
the distance to the optimum, to the true parameters and the gap ``L - L*``.

They run in the per-step path, so a step records raw material only, on the device: for a small model
its gradient and its parameters before and after the step (two copies), for a larger one the per-tensor
norms of gradients, parameters and the update (fused ``_foreach_norm`` kernels) and, for the linear
model, the parameter vector. It goes into the run's step log (:mod:`gdlab.callbacks.steplog`) as one raw
tensor; when the log is flushed, :meth:`GradientDiagnostics.columns` turns the whole block of steps
into the ``diag/*`` values at once, and they reach the loggers with ``train/loss``, each at its step.
A module that trains several members at once (:mod:`gdlab.vectorized`, stacked parameters of shape
``(members, ...)``) gets every value per member, from the same raw vectors with a member dimension.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor

from gdlab.callbacks.linear import LinearView, exact_dtype, linear_view
from gdlab.callbacks.steplog import StepLog
from gdlab.errors import ArgumentError

log = logging.getLogger(__name__)

RAW_KEY = "diag"  # the step-log key of the raw per-step tensor
# Models with at most this many parameters record [gradient, theta_t, theta_{t+1}] per step (two copies,
# the fewest kernels); larger ones their per-tensor norms (a few fused kernels, a few numbers a step).
FLAT_MAX = 4096


class GradientDiagnostics(L.Callback):
    """Logs, every ``every_n_steps`` optimizer steps, under ``diag/``:

    - ``grad_norm``, ``param_norm`` (at the point where the gradient was taken), ``lr``;
    - ``update_norm`` = ``||theta_{t+1} - theta_t||`` and ``update_ratio`` = update_norm / param_norm;
    - for the linear model on MSE (see :mod:`gdlab.callbacks.linear`): ``dist_to_optimum`` (to the
      least-squares solution), ``dist_to_truth`` (to the generating parameters, when the data knows
      them) and ``loss_gap`` = ``L(theta_t) - L*`` on the whole training split, exact from the
      quadratic form (plot it on a log scale: a straight line is linear convergence).

    Step ``t``'s values sit at x = t in TensorBoard, next to ``train/loss`` of the same step; the last
    values are in ``metrics.json``.

    Under every step rule: ``update_norm`` and ``update_ratio`` measure the step actually taken (the
    parameters before and after ``optimizer.step()``, momentum and Adam's scaling included), and ``lr`` is
    the first param group's learning rate at that step, as a schedule sets it. Only for plain gradient
    descent is the update ``lr * grad_norm``; for Adam ``lr`` is a per-coordinate step size, not a
    multiplier of the gradient. ``loss_gap`` and the distances are functions of the parameters, so they
    hold for any rule (with weight decay the iterates settle at a point other than the least-squares one).

    Args:
        every_n_steps: record every n-th step (1: every step). The per-step cost is a few fused kernels.
        reference: also record the closed-form quantities when they apply.
    """

    def __init__(self, every_n_steps: int = 1, reference: bool = True) -> None:
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise ArgumentError(
                "every_n_steps", f"Invalid every_n_steps: {every_n_steps!r} (must be an integer >= 1)"
            )
        self.every_n_steps = every_n_steps
        self.reference = reference
        self.view: LinearView | None = None
        self._params: list[Tensor] = []
        self._pending: tuple[Any, ...] | None = None
        self._flat = False
        self._hooks: list[Any] = []
        self._members: int | None = None
        self._positions: dict[str, int] = {}  # the linear model's weight and bias among the parameters

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._members = getattr(pl_module, "members", None)
        single = pl_module.member_view(0) if self._members else pl_module  # one member: what is measured
        self.view = linear_view(trainer, single) if self.reference else None
        if self.reference and not hasattr(single, "loss_fn"):
            log.info(
                "diag/loss_gap and the distances to the optimum are left out: %s has no loss_fn attribute (the "
                "loss it minimises; see docs/extending.md, 'A LightningModule')",
                type(pl_module).__name__,
            )
        # Listed once: pl_module.parameters() walks every submodule (metrics included), ~0.5 ms a call.
        # With members, the stacked parameters come in the order of one member's own.
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        own = [p for p in single.parameters() if p.requires_grad]
        self._flat = sum(p.numel() for p in own) <= FLAT_MAX
        self._positions = {}
        if self.view is not None:
            for name, tensor in (("weight", self.view.weight), ("bias", self.view.bias)):
                found = [i for i, p in enumerate(own) if p is tensor]
                if found:
                    self._positions[name] = found[0]
        self._pending = None
        self._step_log = StepLog.of(trainer, self)
        self._step_log.derive(RAW_KEY, self.columns)
        # After each optimizer step: the update just taken.
        self._hooks = [opt.register_step_post_hook(self._after_step) for opt in trainer.optimizers]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._pending = None
        if trainer.global_step % self.every_n_steps:
            return
        params = self._params
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        lr = optimizer.param_groups[0]["lr"]  # Python floats already (one per member): no sync
        lr = [float(v) for v in lr] if isinstance(lr, (list, tuple)) else float(lr)
        m = self._members
        if self._flat:  # one copy of [gradient, theta_t]: everything else is derived at flush
            if m:
                self._pending = (torch.cat([t.reshape(m, -1) for t in grads + params], dim=1), lr)
            else:
                self._pending = (torch.cat([t.reshape(-1) for t in grads + params]), lr)
            return
        if m:  # (members, tensors) norms
            norms = torch.stack([t.reshape(m, -1).norm(dim=1) for t in grads + params], dim=1)
        else:
            norms = torch._foreach_norm(grads + params)
        theta = self._theta() if self.view is not None else None  # the point of the gradient
        self._pending = (norms, theta, [p.clone() for p in params], lr)  # a copy of theta_t

    def _theta(self) -> Tensor:
        """The linear model's ``[w; b]``, ``(d [+1], k)`` (with members ``(members, d [+1], k)``)."""
        if not self._members:
            return self.view.flat()
        dtype = exact_dtype(self._params[0].device)
        w = self._params[self._positions["weight"]].detach().transpose(1, 2).to(dtype)  # (M, d, k)
        if "bias" not in self._positions:
            return w
        return torch.cat([w, self._params[self._positions["bias"]].detach().to(dtype).unsqueeze(1)], dim=1)

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """torch's optimizer step post-hook: the step's raw vector, the update just taken included."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        m = self._members
        if self._flat:
            before, lr = pending  # + theta_{t+1}
            if m:
                raw = torch.cat([before, *(p.reshape(m, -1) for p in self._params)], dim=1)
            else:
                raw = torch.cat([before, *(p.reshape(-1) for p in self._params)])
        elif m:
            norms, theta, before, lr = pending
            torch._foreach_sub_(before, self._params)
            updates = torch.stack([t.reshape(m, -1).norm(dim=1) for t in before], dim=1)
            raw = torch.cat([norms, updates], dim=1).to(exact_dtype(norms.device))
            if theta is not None:
                raw = torch.cat([raw, theta.reshape(m, -1)], dim=1)
        else:
            norms, theta, before, lr = pending
            torch._foreach_sub_(before, self._params)  # theta_t - theta_{t+1}: the update's norm
            raw = torch.stack(norms + torch._foreach_norm(before)).to(exact_dtype(norms[0].device))
            if theta is not None:
                raw = torch.cat([raw, theta.reshape(-1)])
        self._step_log.add({RAW_KEY: raw, "diag/lr": lr})

    def columns(self, raw: Tensor) -> dict[str, Tensor]:
        """The ``diag/*`` values of a block of steps from their raw vectors: ``(steps, 3 x parameters)``
        (gradient, theta_t, theta_{t+1}) for a small model, else ``(steps, 3 x tensors [+ theta])`` (each
        tensor's gradient, parameter and update norm, then the linear model's theta). With members the
        raw vectors are ``(steps, members, ...)`` and each value ``(steps, members)``."""
        lead = raw.shape[:-1]
        values = self._columns(raw.reshape(-1, raw.shape[-1]))
        return {name: value.reshape(lead) for name, value in values.items()}

    def _columns(self, raw: Tensor) -> dict[str, Tensor]:
        if self._flat:
            raw = raw.to(exact_dtype(raw.device))
            n = raw.shape[1] // 3
            grad, param = raw[:, :n].norm(dim=1), raw[:, n : 2 * n].norm(dim=1)
            update = (raw[:, 2 * n :] - raw[:, n : 2 * n]).norm(dim=1)
            thetas = self._flat_thetas(raw[:, n : 2 * n]) if self.view is not None else None
        else:
            n = len(self._params)
            grad, param, update = (raw[:, i * n : (i + 1) * n].norm(dim=1) for i in range(3))
            thetas = raw[:, 3 * n :] if self.view is not None else None
        values = {
            "diag/grad_norm": grad,
            "diag/param_norm": param,
            "diag/update_norm": update,
            "diag/update_ratio": update / param.clamp_min(1e-30),
        }
        view = self.view
        if view is not None and thetas is not None:
            thetas = thetas.reshape(len(raw), *view.device_optimum.shape)  # (steps, d [+1], k)
            delta = thetas - view.device_optimum
            hessian = view.device_reference.hessian
            # 1/2 (theta - theta*)^T H (theta - theta*) per step, averaged over the k outputs (a
            # three-operand torch.einsum here takes tens of milliseconds a call; matmul takes microseconds)
            values["diag/loss_gap"] = 0.5 * (delta * (hessian @ delta)).sum(dim=(1, 2)) / delta.shape[2]
            values["diag/dist_to_optimum"] = delta.flatten(1).norm(dim=1)
            if view.device_truth is not None:
                values["diag/dist_to_truth"] = (thetas - view.device_truth).flatten(1).norm(dim=1)
        return values

    def _flat_thetas(self, flat: Tensor) -> Tensor:
        """The linear model's ``[W^T; b]`` ``(steps, d [+1], k)`` from the steps' flat parameter vectors."""
        pieces, offset = [], 0
        for p in self._params:
            n = p[0].numel() if self._members else p.numel()  # one member's share of a stacked parameter
            pieces.append(flat[:, offset : offset + n])
            offset += n
        k, d = self.view.weight.shape
        w = pieces[self._positions["weight"]].reshape(-1, k, d).transpose(1, 2)
        if "bias" not in self._positions:
            return w
        return torch.cat([w, pieces[self._positions["bias"]].reshape(-1, 1, k)], dim=1)
