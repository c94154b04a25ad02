"""The stacked gradient-descent step: every member's step at once, each with its own rates.

Parameters are stacked, ``(members, ...)``; member ``i`` takes exactly the step ``torch.optim.SGD`` (or
``gdlab.optim.PlainSGD``) would take on its own parameters with its own ``lr``, ``momentum``,
``dampening`` and ``weight_decay``, in the same order of operations (torch's single-tensor SGD):

    d = grad + weight_decay * p
    buf = d (first step), else momentum * buf + (1 - dampening) * d
    d = d + momentum * buf (Nesterov), else buf            (members with momentum > 0)
    p = p - lr * d

A stopped member (diverged, or done) keeps its parameters and momentum: ``torch.where`` on a mask, not a
zero rate (``0 * nan`` is nan).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from gdlab.optim import check_lr

RATES = ("lr", "momentum", "dampening", "weight_decay")


class StackedSGD(Optimizer):
    """Gradient descent (plain, heavy ball or Nesterov) on stacked parameters, one set of rates per member.

    Args:
        params: stacked parameters, each ``(members, ...)``.
        lr, momentum, dampening, weight_decay: one number per member.
        nesterov: Nesterov momentum (every member alike).
        plain: the members' own step rule is ``gdlab.optim.PlainSGD`` (their checkpoints say so).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: Sequence[float],
        momentum: Sequence[float] | None = None,
        dampening: Sequence[float] | None = None,
        weight_decay: Sequence[float] | None = None,
        nesterov: bool = False,
        plain: bool = False,
    ) -> None:
        members = len(lr)
        zeros = [0.0] * members
        rates = {
            "lr": [check_lr(v) for v in lr],
            "momentum": [float(v) for v in (momentum or zeros)],
            "dampening": [float(v) for v in (dampening or zeros)],
            "weight_decay": [float(v) for v in (weight_decay or zeros)],
        }
        for name, values in rates.items():
            if len(values) != members:
                raise ValueError(f"Invalid {name}: {len(values)} values for {members} members")
            if name != "lr" and any(v < 0 for v in values):
                raise ValueError(f"Invalid {name}: {min(values)} (must be >= 0)")
        if nesterov and any(
            m <= 0 or d != 0 for m, d in zip(rates["momentum"], rates["dampening"], strict=True)
        ):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, {**rates, "nesterov": bool(nesterov)})
        self.members = members
        self.plain = plain
        self.active = [True] * members  # host-side: no sync to know whether anyone is frozen
        self._cache: dict[tuple[Any, ...], Tensor] = {}

    def freeze(self, member: int) -> None:
        """Member ``member`` takes no more steps."""
        self.active[member] = False
        self._cache = {k: v for k, v in self._cache.items() if k[0] != "active"}

    def _column(self, name: str, values: Sequence[Any], like: Tensor) -> Tensor:
        """``values`` as a ``(members, 1, ...)`` tensor that broadcasts against ``like`` (cached)."""
        key = (name, like.device, like.dtype, like.dim())
        if key not in self._cache:
            dtype = torch.bool if name == "active" else like.dtype
            column = torch.tensor(list(values), dtype=dtype, device=like.device)
            self._cache[key] = column.reshape(-1, *([1] * (like.dim() - 1)))
        return self._cache[key]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        frozen = not all(self.active)
        for group in self.param_groups:
            momentum = any(group["momentum"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad
                # addcmul(a, b, c) = a + b * c rounds as torch's a.add(b, alpha=c): the same bits as SGD.
                if any(group["weight_decay"]):
                    d = torch.addcmul(d, p, self._column("weight_decay", group["weight_decay"], p))
                if momentum:
                    d = self._momentum(group, p, d)
                new = torch.addcmul(p, d, self._column("-lr", [-v for v in group["lr"]], p))
                if frozen:
                    new = torch.where(self._column("active", self.active, p), new, p)
                p.copy_(new)
        return loss

    def _momentum(self, group: dict[str, Any], p: Tensor, d: Tensor) -> Tensor:
        """The heavy-ball (or Nesterov) direction; members with momentum 0 keep ``d`` itself."""
        state = self.state[p]
        m = self._column("momentum", group["momentum"], p)
        buf = state.get("momentum_buffer")
        if buf is None:
            buf = d.clone()
        else:
            keep = self._column("1-dampening", [1 - v for v in group["dampening"]], p)
            buf = torch.addcmul(buf * m, d, keep)
        if not all(self.active):
            buf = torch.where(self._column("active", self.active, p), buf, state.get("momentum_buffer", buf))
        state["momentum_buffer"] = buf
        direction = torch.addcmul(d, buf, m) if group["nesterov"] else buf
        if not all(group["momentum"]):
            direction = torch.where(m > 0, direction, d)
        return direction

    def member_state(self, member: int, params: list[Tensor]) -> dict[str, Any]:
        """Member ``member``'s step rule as a single optimizer's ``state_dict()`` over ``params`` (its own
        parameters, in the stacked order): what a checkpoint of one run holds."""
        group = self.param_groups[0]
        single = member_optimizer(self, member, params)
        for own, stacked in zip(params, group["params"], strict=True):
            buf = self.state.get(stacked, {}).get("momentum_buffer")
            if buf is not None and group["momentum"][member] > 0:
                single.state[own]["momentum_buffer"] = buf[member].detach().clone()
        return single.state_dict()


def member_optimizer(optimizer: StackedSGD, member: int, params: list[Tensor]) -> Optimizer:
    """Member ``member``'s step rule as the single optimizer a run of its own would have (never stepped):
    ``gdlab.optim.PlainSGD`` where the group has no momentum or weight decay, else ``torch.optim.SGD``."""
    from gdlab.optim import PlainSGD

    group = optimizer.param_groups[0]
    rates = {name: group[name][member] for name in RATES}
    if optimizer.plain:
        return PlainSGD(params, lr=rates["lr"])
    return torch.optim.SGD(params, nesterov=group["nesterov"], **rates)
