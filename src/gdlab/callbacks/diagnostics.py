"""Per-step diagnostics of gradient descent: norms, step sizes and, where the closed form applies,
the distance to the optimum, to the true parameters and the gap ``L - L*``.

They run in the per-step path, so a step records raw material only, on the device: for a small model
its gradient and its parameters before and after the step (two copies), for a larger one the per-tensor
norms of gradients, parameters and the update (fused ``_foreach_norm`` kernels) and, for the linear
model, the parameter vector. It goes into the run's step log (:mod:`gdlab.callbacks.steplog`) as one raw
tensor; when the log is flushed, :meth:`GradientDiagnostics.columns` turns the whole block of steps
into the ``diag/*`` values at once, and they reach the loggers with ``train/loss``, each at its step.
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

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.view = linear_view(trainer, pl_module) if self.reference else None
        if self.reference and not hasattr(pl_module, "loss_fn"):
            log.info(
                "diag/loss_gap and the distances to the optimum are left out: %s has no loss_fn attribute (the "
                "loss it minimises; see docs/extending.md, 'A LightningModule')",
                type(pl_module).__name__,
            )
        # Listed once: pl_module.parameters() walks every submodule (metrics included), ~0.5 ms a call.
        self._params = [p for p in pl_module.parameters() if p.requires_grad]
        self._flat = sum(p.numel() for p in self._params) <= FLAT_MAX
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
        lr = float(optimizer.param_groups[0]["lr"])  # a Python float already: no sync
        if self._flat:  # one copy of [gradient, theta_t]: everything else is derived at flush
            self._pending = (torch.cat([t.reshape(-1) for t in grads + params]), lr)
            return
        norms = torch._foreach_norm(grads + params)
        theta = self.view.flat() if self.view is not None else None  # (d [+1], k): the point of the gradient
        self._pending = (norms, theta, [p.clone() for p in params], lr)  # a copy of theta_t

    @torch.no_grad()
    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        """torch's optimizer step post-hook: the step's raw vector, the update just taken included."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        if self._flat:
            before, lr = pending  # + theta_{t+1}
            raw = torch.cat([before, *(p.reshape(-1) for p in self._params)])
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
        tensor's gradient, parameter and update norm, then the linear model's theta)."""
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
            values["diag/loss_gap"] = (
                0.5 * torch.einsum("sik,ij,sjk->s", delta, hessian, delta) / delta.shape[2]
            )
            values["diag/dist_to_optimum"] = delta.flatten(1).norm(dim=1)
            if view.device_truth is not None:
                values["diag/dist_to_truth"] = (thetas - view.device_truth).flatten(1).norm(dim=1)
        return values

    def _flat_thetas(self, flat: Tensor) -> Tensor:
        """The linear model's ``[W^T; b]`` ``(steps, d [+1], k)`` from the steps' flat parameter vectors."""
        view = self.view
        pieces, offset = {}, 0
        for p in self._params:
            pieces[id(p)] = flat[:, offset : offset + p.numel()]
            offset += p.numel()
        k, d = view.weight.shape
        w = pieces[id(view.weight)].reshape(-1, k, d).transpose(1, 2)
        if view.bias is None:
            return w
        return torch.cat([w, pieces[id(view.bias)].reshape(-1, 1, k)], dim=1)
