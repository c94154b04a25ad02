"""Per-step diagnostics of gradient descent: norms, step sizes and, where the closed form applies,
the distance to the optimum, to the true parameters and the gap ``L - L*``.

Runs in the per-step path, so it neither synchronises with the device nor goes through
``LightningModule.log`` (whose bookkeeping costs more than the norms themselves, per call): each
step's values are stacked into one device tensor and buffered; every ``flush_every_n_steps`` steps
(and at each epoch's end) the buffer is read back once and written to the loggers at the right steps.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from gdlab.callbacks.linear import LinearView, exact_dtype, linear_view
from gdlab.errors import ConfigError


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The 2-norm of all ``tensors`` seen as one vector (one fused kernel per tensor list)."""
    if not tensors:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


class GradientDiagnostics(L.Callback):
    """Logs, every ``every_n_steps`` optimizer steps, under ``diag/``:

    - ``grad_norm``, ``param_norm`` (at the point where the gradient was taken), ``lr``;
    - ``update_norm`` = ``||theta_{t+1} - theta_t||`` and ``update_ratio`` = update_norm / param_norm;
    - for the linear model on MSE (see :mod:`gdlab.callbacks.linear`): ``dist_to_optimum`` (to the
      least-squares solution), ``dist_to_truth`` (to the generating parameters, when the data knows
      them) and ``loss_gap`` = ``L(theta_t) - L*`` on the whole training split, exact from the
      quadratic form (plot it on a log scale: a straight line is linear convergence).

    Step ``t``'s values sit at x = t in TensorBoard, next to ``train/loss`` of the same step. The last
    values also land in ``trainer.callback_metrics`` (so in ``metrics.json``).

    Args:
        every_n_steps: record every n-th step (1: every step). The per-step cost is a few fused kernels.
        flush_every_n_steps: how often the buffer is read back (one host sync) and written to the loggers.
        reference: also record the closed-form quantities when they apply.
    """

    def __init__(self, every_n_steps: int = 1, flush_every_n_steps: int = 50, reference: bool = True) -> None:
        for name, value in (("every_n_steps", every_n_steps), ("flush_every_n_steps", flush_every_n_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"callbacks.diagnostics.{name}={value!r} must be an integer >= 1 "
                    "(or disable the callback with callbacks.diagnostics=null)"
                )
        self.every_n_steps = every_n_steps
        self.flush_every_n_steps = flush_every_n_steps
        self.reference = reference
        self.view: LinearView | None = None
        self.names: list[str] = []
        self._buffer: list[tuple[int, float, Tensor]] = []  # (step, lr, stacked values)
        self._pending: tuple[int, float, list[Tensor], list[Tensor]] | None = None
        self._param_list: list[Tensor] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.view = linear_view(trainer, pl_module) if self.reference else None
        self.names = ["grad_norm", "param_norm", "update_norm", "update_ratio"]
        if self.view is not None:
            self.names += ["loss_gap", "dist_to_optimum"]
            if self.view.true_theta is not None:
                self.names.append("dist_to_truth")
        self._buffer, self._pending = [], None
        # Listed once: pl_module.parameters() walks every submodule (metrics included), ~0.5 ms a call.
        self._param_list = [p for p in pl_module.parameters() if p.requires_grad]

    def _params(self, pl_module: L.LightningModule) -> list[Tensor]:
        return self._param_list

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._pending = None
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        params = self._params(pl_module)
        grads = [p.grad for p in params if p.grad is not None]
        values = [global_norm(grads), global_norm(params)]
        if self.view is not None:
            values += self._reference_values(self.view)
        lr = float(optimizer.param_groups[0]["lr"])  # a Python float already: no sync
        self._pending = (step, lr, values, [p.detach().clone() for p in params])

    def _reference_values(self, view: LinearView) -> list[Tensor]:
        dtype = exact_dtype(view.weight.device)
        w, b = view.theta(dtype)
        theta = view.flat(dtype)
        values = [
            view.reference.gap_at(w, b),
            torch.linalg.vector_norm(theta - view.optimum(theta.device, dtype)),
        ]
        if view.true_theta is not None:
            truth = view.true_theta.to(device=theta.device, dtype=dtype)
            values.append(torch.linalg.vector_norm(theta - truth))
        return values

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        if self._pending is None:
            return
        step, lr, (grad, param, *rest), before = self._pending
        self._pending = None
        update = global_norm(torch._foreach_sub([p.detach() for p in self._params(pl_module)], before))
        ratio = update / param.clamp_min(1e-30)
        values = torch.stack(
            [v.to(grad.dtype) for v in (grad, param, update, ratio)] + [v.to(grad.dtype) for v in rest]
        )
        self._buffer.append((step, lr, values))
        if len(self._buffer) >= self.flush_every_n_steps:
            self.flush(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def flush(self, trainer: L.Trainer) -> None:
        """Read the buffered steps back (one sync) and write them to every logger."""
        if not self._buffer:
            return
        table = torch.stack([v for _, _, v in self._buffer]).double().cpu().tolist()
        rows = []
        for (step, lr, _), row in zip(self._buffer, table, strict=True):
            metrics = {f"diag/{n}": v for n, v in zip(self.names, row, strict=True)}
            metrics["diag/lr"] = lr
            rows.append((step, metrics))
        self._buffer = []
        for logger in trainer.loggers:
            for step, metrics in rows:
                logger.log_metrics(metrics, step=step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in rows[-1][1].items()})
