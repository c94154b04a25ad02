"""Per-step diagnostics of gradient descent: norms, step sizes and, where the closed form applies,
the distance to the optimum, to the true parameters and the gap ``L - L*``.

Runs in the per-step path, so it neither synchronises with the device nor goes through
``LightningModule.log`` (whose bookkeeping costs more than the norms themselves, per call). A step
only records raw material on the device: the per-tensor norms of gradients, parameters and the
update (three fused ``_foreach_norm`` kernels) and, for the linear model, the parameter vector. Every
``flush_every_n_steps`` steps and at each epoch's end the buffer is read back at once, the
diagnostics are computed for all buffered steps together and written to the loggers at their steps.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

from gdlab.callbacks.linear import LinearView, linear_view
from gdlab.errors import ConfigError


def write_rows(loggers: list, rows: list[tuple[int, dict[str, float]]]) -> None:
    """Write ``(step, {name: value})`` rows to every logger.

    A TensorBoard writer gets one event per step holding all its values: ``log_metrics`` writes one
    event per scalar, and each event costs ~0.1 ms (a locked queue to the writer thread), 9x the cost
    here for the 9 diagnostics of a step.
    """
    for logger in loggers:
        writer = getattr(getattr(logger, "experiment", None), "_get_file_writer", None)
        if writer is None:  # any other logger (and TensorBoard's dummy on non-zero ranks)
            for step, metrics in rows:
                logger.log_metrics(metrics, step=step)
            continue
        from tensorboard.compat.proto.summary_pb2 import Summary

        file_writer = writer()
        if file_writer is None:  # DDP rank > 0: Lightning's dummy experiment returns None here
            continue
        for step, metrics in rows:
            values = [Summary.Value(tag=name, simple_value=value) for name, value in metrics.items()]
            file_writer.add_summary(Summary(value=values), step)


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
        self._buffer: list[tuple[int, float, Tensor, Tensor | None]] = []  # (step, lr, norms, theta)
        self._pending: tuple | None = None
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

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self._pending = None
        step = trainer.global_step
        if step % self.every_n_steps:
            return
        params = self._param_list
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        norms = torch._foreach_norm(grads) + torch._foreach_norm(params)
        theta = self.view.flat() if self.view is not None else None  # (d [+1], k): the point of the gradient
        lr = float(optimizer.param_groups[0]["lr"])  # a Python float already: no sync
        self._pending = (step, lr, norms, theta, torch._foreach_mul(params, 1.0))  # a copy of theta_t

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[override]
        if self._pending is None:
            return
        step, lr, norms, theta, before = self._pending
        self._pending = None
        updates = torch._foreach_norm(torch._foreach_sub(self._param_list, before))
        # One vector per step: per-tensor norms of [gradients, parameters, updates].
        self._buffer.append((step, lr, torch.stack([n.float() for n in norms + updates]), theta))
        if len(self._buffer) >= self.flush_every_n_steps:
            self.flush(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush(trainer)

    def _table(self) -> Tensor:
        """The buffered steps' diagnostics, ``(steps, len(names))`` float64 on the CPU (the one sync)."""
        n = len(self._param_list)
        norms = torch.stack([v for _, _, v, _ in self._buffer]).double()  # (steps, 3n)
        grad, param, update = (norms[:, i * n : (i + 1) * n].norm(dim=1) for i in range(3))
        columns = [grad, param, update, update / param.clamp_min(1e-30)]
        if self.view is not None:
            columns += self._reference_columns(self.view, torch.stack([t for _, _, _, t in self._buffer]))
        return torch.stack([c.to(norms.device, torch.float64) for c in columns], dim=1).cpu()

    @staticmethod
    def _reference_columns(view: LinearView, thetas: Tensor) -> list[Tensor]:
        """``L - L*`` (the exact quadratic form), distance to the optimum and to the truth, per step."""
        ref = view.device_reference
        delta = thetas - view.device_optimum  # (steps, d [+1], k)
        gap = 0.5 * torch.einsum("sik,ij,sjk->s", delta, ref.hessian, delta) / delta.shape[2]
        columns = [gap, delta.flatten(1).norm(dim=1)]
        if view.device_truth is not None:
            columns.append((thetas - view.device_truth).flatten(1).norm(dim=1))
        return columns

    def flush(self, trainer: L.Trainer) -> None:
        """Read the buffered steps back (one sync), compute their diagnostics and write them to every logger."""
        if not self._buffer:
            return
        table = self._table().tolist()
        rows = []
        for (step, lr, _, _), row in zip(self._buffer, table, strict=True):
            metrics = {f"diag/{n}": v for n, v in zip(self.names, row, strict=True)}
            metrics["diag/lr"] = lr
            rows.append((step, metrics))
        self._buffer = []
        write_rows(trainer.loggers, rows)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in rows[-1][1].items()})
