"""M networks of one architecture trained as one LightningModule, and the batches each of them reads.

:class:`StackedModule` holds the members' parameters stacked (``torch.func.stack_module_state``): one
forward and backward for all of them (``vmap`` over ``functional_call``). Its loss is the sum of the
members' mean losses, so each member's gradient is its own; the stacked step
(:class:`gdlab.vectorized.step.StackedSGD`) gives each its own rates. Each member can be looked at as
the plain :class:`gdlab.module.GDModule` of a run of its own (:meth:`StackedModule.member_view`), whose
parameters share the stacked storage: live, no copy.

:class:`StackedBatches` serves every member its own shuffle order (``InMemoryBatches.permutation`` of its
own shuffle seed), and the one shared batch when they all read the same samples.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from gdlab.callbacks.steplog import MEMBER_LOSS, StepLog
from gdlab.data.batches import InMemoryBatches
from gdlab.module import GDModule
from gdlab.vectorized.metrics import MemberMetrics
from gdlab.vectorized.step import StackedSGD, member_optimizer


class StackedModule(L.LightningModule):
    """Trains ``nets`` (one architecture, M members) at once on ``loss_fn``.

    Args:
        nets: the members' networks, each built as a run of its own builds it.
        loss_fn: the loss (a mean over the batch), called per member.
        rates: the stacked step's settings (:class:`StackedSGD`: ``lr``, ``momentum``, ... one per member).
        optimizer: a member's own optimizer factory (its checkpoint and its views use it).
        task, num_outputs: as :class:`GDModule`'s.
        input_ndim: the dimensions of one sample (the datamodule's ``input_shape``).
        names: each member's job name, for log lines (``3_optimizer.lr-0.1``).
    """

    def __init__(
        self,
        nets: Sequence[nn.Module],
        loss_fn: nn.Module,
        rates: dict[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer],
        task: str,
        num_outputs: int,
        input_ndim: int,
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        params, buffers = stack_module_state(list(nets))
        self.members = len(nets)
        self.param_names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.param_names])
        self.buffer_names = list(buffers)
        for k, name in enumerate(self.buffer_names):
            self.register_buffer(f"stacked_buffer_{k}", buffers[name])
        # Kept out of the module tree: the architecture for functional_call (on the meta device, no
        # memory) and one real copy to build member views from.
        self._shape = (copy.deepcopy(nets[0]).to("meta"), copy.deepcopy(nets[0]))
        self.loss_fn = loss_fn
        self.rates = dict(rates)
        self.optimizer_factory = optimizer
        self.task, self.num_outputs = task, num_outputs
        self.names = list(names or [str(i) for i in range(self.members)])
        self.input_ndim = input_ndim  # of one sample: a batch with one more dim is every member's
        self.metrics = {
            split: MemberMetrics(task, f"{split}/", with_loss=split != "train")
            for split in ("train", "val", "test")
        }
        self.stopped: list[tuple[int, int] | None] = [
            None
        ] * self.members  # (epoch, step) a member stopped at
        self._views: dict[int, GDModule] = {}

    # -- the members, one at a time
    def member_name(self, member: int) -> str:
        return self.names[member]

    def member_view(self, member: int) -> GDModule:
        """Member ``member`` as the GDModule of a run of its own; its parameters are views of the stacked
        ones (updated as they train)."""
        view = self._views.get(member)
        if view is not None and next(view.parameters()).data_ptr() == self._share(member, 0).data_ptr():
            return view
        net = copy.deepcopy(self._shape[1])
        for k, name in enumerate(self.param_names):
            owner, attr = _owner(net, name)
            setattr(owner, attr, nn.Parameter(self._share(member, k)))
        for k, name in enumerate(self.buffer_names):
            owner, attr = _owner(net, name)
            owner.register_buffer(attr, getattr(self, f"stacked_buffer_{k}")[member])
        view = GDModule(
            net, self.loss_fn, self.optimizer_factory, task=self.task, num_outputs=self.num_outputs
        )
        self._views[member] = view
        return view

    def _share(self, member: int, k: int) -> Tensor:
        return self.stacked[k].data[member]

    def member_optimizer(self, member: int) -> torch.optim.Optimizer:
        """Member ``member``'s own step rule and rates (a stand-in over placeholders, never stepped: its type,
        its param group, its state in a checkpoint)."""
        return member_optimizer(self._optimizer(), member, self._placeholders())

    def _placeholders(self) -> list[Tensor]:
        """One small leaf tensor per stacked parameter, in order: what a member's stand-in optimizer holds."""
        return [torch.zeros(1, requires_grad=True) for _ in self.param_names]

    def member_state_dict(self, member: int) -> dict[str, Tensor]:
        """Member ``member``'s weights with the keys of a run of its own (``net.<name>``), copied."""
        state = {
            f"net.{n}": p.detach()[member].cpu().clone()
            for n, p in zip(self.param_names, self.stacked, strict=True)
        }
        for k, name in enumerate(self.buffer_names):
            state[f"net.{name}"] = getattr(self, f"stacked_buffer_{k}")[member].cpu().clone()
        return state

    def member_optimizer_state(self, member: int) -> dict[str, Any]:
        return self._optimizer().member_state(member, self._placeholders())

    def _optimizer(self) -> StackedSGD:
        optimizer = (
            self.trainer.optimizers[0] if self._trainer is not None and self.trainer.optimizers else None
        )
        return optimizer if isinstance(optimizer, StackedSGD) else self.configure_optimizers()

    def is_active(self, member: int) -> bool:
        return self.stopped[member] is None

    def stop_member(self, member: int, trainer: L.Trainer) -> None:
        """Member ``member`` takes no more steps (diverged, or done); training ends when none is left."""
        if self.stopped[member] is not None:
            return
        self._optimizer().freeze(member)
        step_log = StepLog.of(trainer, self)
        last = step_log.current_step if step_log.current_step is not None else trainer.global_step
        step_log.stop_member(member, last)
        self.stopped[member] = (trainer.current_epoch, last + 1)
        if all(s is not None for s in self.stopped):
            trainer.should_stop = True

    def final_step(self, member: int) -> int:
        """The optimizer steps member ``member`` took."""
        stopped = self.stopped[member]
        return stopped[1] if stopped is not None else self.trainer.global_step

    # -- training
    def forward(self, x: Tensor) -> Tensor:
        params = dict(zip(self.param_names, self.stacked, strict=True))
        buffers = {name: getattr(self, f"stacked_buffer_{k}") for k, name in enumerate(self.buffer_names)}
        shared = self._shared(x)
        shape = self._shape[0]

        def one(p: dict[str, Tensor], b: dict[str, Tensor], inputs: Tensor) -> Tensor:
            return functional_call(shape, (p, b), (inputs,))

        return torch.vmap(one, in_dims=(0, 0, None if shared else 0))(params, buffers, x)

    def _shared(self, x: Tensor) -> bool:
        """A batch every member reads (one sample's dims + 1), not one per member (+ 2)."""
        return x.dim() == self.input_ndim + 1

    def member_losses(self, preds: Tensor, y: Tensor, shared: bool) -> Tensor:
        """Each member's mean loss on its batch, ``(members,)``."""
        return torch.vmap(self.loss_fn, in_dims=(0, None if shared else 0))(preds, y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch
        preds = self(x)
        losses = self.member_losses(preds, y, self._shared(x))
        self.metrics["train"].update(preds.detach(), y)
        return {"loss": losses.sum(), MEMBER_LOSS: losses.detach()}

    def on_train_epoch_end(self) -> None:
        self._write("train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.metrics["val"].reset()
            return
        self._write("val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        pass  # written per member by gdlab.vectorized.train, for the members whose run is a result

    def _evaluate(self, split: str, batch: tuple[Tensor, Tensor]) -> None:
        x, y = batch
        preds = self(x)
        self.metrics[split].update(preds, y, self.member_losses(preds, y, self._shared(x)))

    def _write(self, split: str, members: list[int] | None = None) -> None:
        values = self.metrics[split].compute()
        self.metrics[split].reset()
        step_log = StepLog.of(self.trainer, self)
        step_log.write_members(values, self.trainer.global_step, self.trainer.current_epoch, members)

    def write_test(self, members: list[int]) -> None:
        """The test metrics of ``members``, each at its own last step."""
        values = self.metrics["test"].compute()
        self.metrics["test"].reset()
        steps = [self.final_step(i) for i in range(self.members)]
        StepLog.of(self.trainer, self).write_members(values, steps, self.trainer.current_epoch, members)

    def configure_optimizers(self) -> StackedSGD:
        return StackedSGD(self.stacked.parameters(), **self.rates)


def _owner(net: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule holding parameter ``name`` (``net.0.weight`` -> ``net[0]``, ``weight``)."""
    path, _, attr = name.rpartition(".")
    return (net.get_submodule(path) if path else net), attr


class StackedBatches:
    """The training batches of every member: ``(x, y)`` of shape ``(members, batch, ...)``, member ``i``'s
    rows in the order of its own shuffle seed; the plain shared batch when every member has the same order
    (no shuffling, full batch, one seed)."""

    def __init__(self, batches: InMemoryBatches, shuffle_seeds: Sequence[int]) -> None:
        self.batches = batches
        self.seeds = sorted(set(shuffle_seeds))
        self.which = torch.tensor([self.seeds.index(s) for s in shuffle_seeds])
        self.shared = not batches.shuffle or len(self.seeds) == 1

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        b = self.batches
        if self.shared:
            if len(self.seeds) == 1:
                b.seed = self.seeds[0]
            yield from b
            return
        if b.epoch_source is not None:
            b.epoch = int(b.epoch_source())
        orders = []
        for seed in self.seeds:
            own = copy.copy(b)
            own.seed = seed
            orders.append(own.permutation(b.epoch))
        order = torch.stack(orders)[self.which].to(b.tensors[0].device)  # (members, n)
        x, y = b.tensors[:2]
        members = len(self.which)
        for i in range(b.n_batches):
            lo, hi = i * b.batch_size, min((i + 1) * b.batch_size, b.n)
            idx = order[:, lo:hi].reshape(-1)
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            if b.transform is not None:
                xb = b.transform(xb)
            yield xb.reshape(members, hi - lo, *xb.shape[1:]), yb.reshape(members, hi - lo, *yb.shape[1:])


class StackedDataModule(L.LightningDataModule):
    """The run's datamodule with training batches for every member (:class:`StackedBatches`); anything
    else (splits, the closed form, val and test batches) is the wrapped datamodule's."""

    def __init__(self, inner: L.LightningDataModule, shuffle_seeds: Sequence[int]) -> None:
        super().__init__()
        self.inner = inner
        self.shuffle_seeds = list(shuffle_seeds)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    def train_dataloader(self) -> StackedBatches:
        batches = self.inner.train_dataloader()
        trainer = self.trainer
        if trainer is not None:
            batches.epoch_source = lambda: trainer.current_epoch
        return StackedBatches(batches, self.shuffle_seeds)

    def val_dataloader(self) -> Any:
        return self.inner.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.inner.test_dataloader()
