"""The one path of per-step values: every optimizer step's ``train/loss`` and ``diag/*``, kept on the device
and written to every logger in blocks, each value at its own step. ``gdlab.factory.build`` gives every
run's Trainer one :class:`StepLog`, first among its callbacks (``log_flush_steps`` sets ``flush_every``).

Lightning's ``self.log(on_step=True)`` costs about 0.75 ms of Python per value and step, and reading a
value back forces a host sync, against 0.1-5 ms for a whole small-model training step. Here each
optimizer step opens a row, the loss ``training_step`` returned goes into it as ``train/loss`` (any
LightningModule's: nothing in the module logs it), and other callbacks add to it (``diag/*``). Every
``flush_every`` steps, and at the end of each epoch and of training, the pending rows are read back
with one host sync and written to every logger through the public ``logger.log_metrics``, each row
under its own step number: step ``t``'s ``train/loss`` (measured before step ``t``) sits at ``t``.
Readers (the divergence guard) see the same rows, as numbers, before they are written.

Two kinds of values:

- tensors (the loss, a norm): written at every step;
- plain numbers (the learning rate): written at the first step of each epoch and whenever they change.
  The step's ``epoch`` is written the same way.

A callback whose per-step quantities would each take a few small kernels can add one raw tensor per
step under a key registered with :meth:`StepLog.derive`; at flush the rows' raw tensors are stacked
and the function computes the logged values for the whole block at once.

Members (``StepLog(members=M)``, :mod:`gdlab.vectorized`): the run trains M models at once, each a job of
its own with its own loggers (``member_loggers``). Every value then carries a member dimension: a tensor
of shape ``(M,)`` (a scalar is every member's), a sequence of M numbers, derived columns of shape
``(steps, M)``; each member's values go to its own loggers only, with the same tags and steps as a run
of its own. The loss comes from the ``member_loss`` entry of what ``training_step`` returns. A member
that stopped (:meth:`stop_member`) writes no step after its last one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch import Tensor

Derive = Callable[[Tensor], Mapping[str, Tensor]]
Reader = Callable[[list["Written"]], None]


# The entry of training_step's output that holds each member's loss, shape (members,).
MEMBER_LOSS = "member_loss"


@dataclass
class Written:
    """One flushed step: its number, epoch and every value as a float (with members: ``members[i]``
    holds member ``i``'s values and ``values`` stays empty)."""

    step: int
    epoch: int
    values: dict[str, float]
    members: list[dict[str, float]] | None = None


@dataclass
class _Row:
    step: int
    epoch: int
    tensors: dict[str, Tensor] = field(default_factory=dict)
    numbers: dict[str, float] = field(default_factory=dict)


class StepLog(L.Callback):
    """Writes every optimizer step's values to the loggers (see the module docstring).

    Args:
        flush_every: rows kept on the device before they are read back and written (1: every step).
        members: the number of models trained at once (None: one run).
        member_loggers: with ``members``, each member's own loggers.
    """

    def __init__(
        self,
        flush_every: int = 50,
        members: int | None = None,
        member_loggers: list[list[Any]] | None = None,
    ) -> None:
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise ValueError(f"Invalid flush_every: {flush_every!r} (must be an integer >= 1)")
        if members is not None and (isinstance(members, bool) or not isinstance(members, int) or members < 1):
            raise ValueError(f"Invalid members: {members!r} (must be an integer >= 1, or None)")
        self.flush_every = flush_every
        self.members = members
        self.member_loggers = member_loggers or [[] for _ in range(members or 0)]
        self.latest: dict[str, float] = {}  # the last value of each scalar written so far
        self.readers: list[Reader] = []
        self._rows: list[_Row] = []
        self._derive: dict[str, Derive] = {}
        self._reset_written()

    def _reset_written(self) -> None:
        n = self.members or 0
        self._written_numbers: dict[str, float] = {}
        self._written_epoch: int | None = None
        # With members: the same, per member, and the last step each member writes (None: still training).
        self.member_latest: list[dict[str, float]] = [{} for _ in range(n)]
        self.member_metrics: list[dict[str, float]] = [
            {} for _ in range(n)
        ]  # epoch values, as callback_metrics
        self.last_step: list[int | None] = [None] * n
        self._member_numbers: list[dict[str, float]] = [{} for _ in range(n)]
        self._member_epoch: list[int | None] = [None] * n

    def __len__(self) -> int:
        return len(self._rows)

    @staticmethod
    def of(trainer: L.Trainer, user: object) -> StepLog:
        """The run's StepLog, for a callback that writes to it or reads from it."""
        for callback in trainer.callbacks:
            if isinstance(callback, StepLog):
                return callback
        raise ValueError(
            f"{type(user).__name__} reads and writes per-step values through gdlab's StepLog callback, which "
            "this Trainer does not have (gdlab.factory.build adds it to every run's)"
        )

    # Lightning's hooks: a row per training batch (one optimizer step), blocks flushed as they fill.
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows, self.latest = [], {}
        self._reset_written()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.open(trainer.global_step, trainer.current_epoch)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, *args: Any
    ) -> None:
        key = MEMBER_LOSS if self.members else "loss"
        loss = outputs.get(key) if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, Tensor):
            self.add({"train/loss": loss})
        if self.due():
            # The current step stays pending: a later callback's on_train_batch_end may still add to it.
            self.flush_to(trainer, keep_current=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush_to(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.flush_to(trainer)  # a run stopped mid-epoch (max_steps, the divergence guard)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # The steps before an interrupt or an error still reach the loggers, in a single process: under
        # DDP the other processes may never join the mean (one of them failed), so they are dropped.
        if trainer.world_size > 1:
            self._rows = []
            return
        try:
            self.flush(trainer.loggers)
        except Exception:  # the run's own error is the one to report
            self._rows = []

    def flush_to(self, trainer: L.Trainer, keep_current: bool = False) -> list[Written]:
        """:meth:`flush` to the trainer's loggers; under DDP each value is the mean over the processes (each
        holds the loss of its equal share of the global batch, so the mean is the global batch's loss; values
        computed from the synchronised weights are equal everywhere). One all-reduce per flush."""

        def mean_over_processes(values: Tensor) -> Tensor:
            return trainer.strategy.reduce(values, reduce_op="mean")

        reduce = mean_over_processes if trainer.world_size > 1 else None
        return self.flush(trainer.loggers, reduce=reduce, keep_current=keep_current)

    def open(self, step: int, epoch: int, values: Mapping[str, Tensor | float] | None = None) -> None:
        """Start the row of optimizer step ``step``; ``add`` attaches to it until the next ``open``."""
        self._rows.append(_Row(step, epoch))
        if values:
            self.add(values)

    def add(self, values: Mapping[str, Tensor | float]) -> None:
        """Attach values to the current step: scalar tensors, plain numbers, or raw tensors under a key
        registered with :meth:`derive`."""
        if not self._rows:
            raise RuntimeError("StepLog.add() before any training step: nothing to attach the values to")
        row = self._rows[-1]
        width = self.members or 1
        for name, value in values.items():
            if isinstance(value, Tensor):
                if name not in self._derive and value.numel() not in (1, width):
                    what = "a scalar" + (f" or one value per member ({width})" if self.members else "")
                    raise ValueError(
                        f"per-step value {name!r} must be {what}, got shape {tuple(value.shape)}"
                    )
                row.tensors[name] = value.detach()
            elif self.members and isinstance(value, (list, tuple)):
                if len(value) != width:
                    raise ValueError(f"per-step value {name!r} has {len(value)} numbers for {width} members")
                row.numbers[name] = [float(v) for v in value]
            else:
                row.numbers[name] = float(value)

    @property
    def current_step(self) -> int | None:
        """The step of the row ``add`` attaches to (None before the first step)."""
        return self._rows[-1].step if self._rows else None

    def stop_member(self, member: int, last_step: int) -> None:
        """Member ``member`` trains no more after step ``last_step``: later rows are not written for it."""
        if self.last_step[member] is None:
            self.last_step[member] = last_step

    def write_members(
        self,
        values: Mapping[str, Tensor],
        step: int | Sequence[int],
        epoch: int,
        members: Iterable[int] | None = None,
    ) -> None:
        """Epoch-level values, one per member (``{name: (M,)}``), to each member's loggers at ``step`` (or
        each member's own), with ``epoch``, as Lightning writes a run's ``self.log`` values; kept in
        :attr:`member_metrics`. One host sync. ``members``: which members (default: those still
        training)."""
        if not values:
            return
        names = list(values)
        block = torch.stack([values[n].detach().reshape(-1).to(torch.float64) for n in names]).tolist()
        chosen = [i for i, last in enumerate(self.last_step) if last is None] if members is None else members
        for i in chosen:
            own = {n: block[k][i] for k, n in enumerate(names)}
            self.member_metrics[i].update(own)
            at = step if isinstance(step, int) else step[i]
            for logger in self.member_loggers[i]:
                logger.log_metrics({**own, "epoch": float(epoch)}, step=at)

    def derive(self, key: str, columns: Derive) -> None:
        """Values added under ``key`` are raw tensors of one fixed shape per step. At flush they are stacked
        (``(steps, *shape)``) and ``columns(stacked)`` returns the logged values, ``{name: (steps,)}``."""
        self._derive[key] = columns

    def due(self) -> bool:
        """True when ``flush_every`` finished steps wait (the current step's row may still grow)."""
        return len(self._rows) > self.flush_every

    def flush(
        self,
        loggers: Iterable[Any],
        reduce: Callable[[Tensor], Tensor] | None = None,
        keep_current: bool = False,
    ) -> list[Written]:
        """Read the pending rows back (one host sync per device), hand them to the readers and write them
        to every logger; return them. ``keep_current`` leaves the current step's row pending (hooks of the
        same step may still add to it). ``reduce`` maps each device's block of values first (DDP: the mean
        over processes)."""
        rows = self._rows[:-1] if keep_current else self._rows
        if not rows:
            return []
        self._rows = self._rows[len(rows) :]
        parts, slots = self._gather(rows)
        if self.members:
            return self._flush_members(rows, parts, slots, reduce)
        written = [Written(r.step, r.epoch, {}) for r in rows]
        for (name, positions), values in zip(slots, _read_back(parts, reduce), strict=True):
            for i, value in zip(positions, values, strict=True):
                written[i].values[name] = value
        for w, row in zip(written, rows, strict=True):
            w.values.update(row.numbers)
        for reader in self.readers:
            reader(written)
        for w, row in zip(written, rows, strict=True):
            self.latest.update(w.values)
            metrics = self._metrics(w, row.numbers)
            for logger in loggers:
                logger.log_metrics(metrics, step=w.step)
        return written

    def _flush_members(
        self,
        rows: list[_Row],
        parts: list[Tensor],
        slots: list[tuple[str, list[int]]],
        reduce: Callable[[Tensor], Tensor] | None,
    ) -> list[Written]:
        """:meth:`flush` with a member dimension: every part holds ``len(positions) x M`` values (a scalar
        tensor, every member's, is broadcast)."""
        m = self.members
        written = [Written(r.step, r.epoch, {}, [{} for _ in range(m)]) for r in rows]
        for (name, positions), values in zip(slots, _read_back(parts, reduce), strict=True):
            width = len(values) // len(positions)
            for k, position in enumerate(positions):
                for i in range(m):
                    written[position].members[i][name] = values[k * width + (i if width > 1 else 0)]
        for w, row in zip(written, rows, strict=True):
            for name, number in row.numbers.items():
                for i in range(m):
                    w.members[i][name] = number[i] if isinstance(number, list) else number
        for reader in self.readers:
            reader(written)
        for w, row in zip(written, rows, strict=True):
            for i, loggers in enumerate(self.member_loggers):
                if self.last_step[i] is not None and w.step > self.last_step[i]:
                    continue
                values = w.members[i]
                self.member_latest[i].update(values)
                new_epoch = self._member_epoch[i] != w.epoch
                metrics = _changed(values, self._member_numbers[i], new_epoch, w, row.numbers)
                self._member_epoch[i] = w.epoch
                for logger in loggers:
                    logger.log_metrics(metrics, step=w.step)
        return written

    def _gather(self, rows: list[_Row]) -> tuple[list[Tensor], list[tuple[str, list[int]]]]:
        """The tensors to read back, each 1-d, and for each the (name, row positions) its values go to."""
        parts: list[Tensor] = []
        slots: list[tuple[str, list[int]]] = []
        scalars: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            for name in row.tensors:
                scalars.setdefault(name, []).append(i)
        for name, positions in scalars.items():
            if name in self._derive:
                raw = torch.stack([rows[i].tensors[name] for i in positions])
                for column, values in self._derive[name](raw).items():
                    parts.append(values.reshape(-1))
                    slots.append((column, positions))
            else:
                values = [rows[i].tensors[name] for i in positions]
                if any(v.numel() > 1 for v in values):  # one value per member
                    values = [v.reshape(-1).expand(self.members) for v in values]
                    parts.append(torch.stack(values).reshape(-1))
                else:
                    parts.append(torch.stack([v.reshape(()) for v in values]))
                slots.append((name, positions))
        return parts, slots

    def _metrics(self, w: Written, numbers: Mapping[str, float]) -> dict[str, float]:
        """What one row writes: every tensor value; numbers and the epoch at an epoch's first step or when
        they changed."""
        new_epoch = w.epoch != self._written_epoch
        self._written_epoch = w.epoch
        return _changed(w.values, self._written_numbers, new_epoch, w, numbers)


def _changed(
    values: Mapping[str, float],
    written_numbers: dict[str, float],
    new_epoch: bool,
    w: Written,
    numbers: Mapping[str, Any],
) -> dict[str, float]:
    """A row's values to write: tensor values always; plain numbers (the row's ``numbers``) at an epoch's
    first step or when they changed; the epoch at its first step."""
    metrics = {}
    for name, value in values.items():
        if name in numbers:
            last = written_numbers.get(name)
            if not new_epoch and last is not None and _same(last, value):
                continue
            written_numbers[name] = value
        metrics[name] = value
    if new_epoch:
        metrics["epoch"] = float(w.epoch)
    return metrics


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _read_back(parts: list[Tensor], reduce: Callable[[Tensor], Tensor] | None) -> list[list[float]]:
    """The values of each 1-d tensor in ``parts``: one ``tolist()`` (one host sync) per device. float64
    keeps every float32/float64 value exact."""
    by_device: dict[torch.device, list[int]] = {}
    for i, part in enumerate(parts):
        by_device.setdefault(part.device, []).append(i)
    values: list[list[float]] = [[] for _ in parts]
    for indices in by_device.values():
        block = torch.cat([parts[i].to(torch.float64) for i in indices])
        flat = (block if reduce is None else reduce(block)).tolist()
        start = 0
        for i in indices:
            values[i] = flat[start : start + len(parts[i])]
            start += len(parts[i])
    return values
