"""In-memory batching by slicing: the fast replacement for ``DataLoader(TensorDataset)``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch

from gdlab.errors import ArgumentError

log = logging.getLogger(__name__)


class InMemoryBatches:
    """Serves ``(x, y)`` batches by slicing tensors that already sit in memory.

    One index-tensor gather per batch (when shuffling) instead of a ``__getitem__`` call per
    sample plus collate. ``batch_size=None`` yields the whole split as one batch (full-batch
    gradient descent). The shuffle order of epoch ``e`` depends only on ``(seed, e)``, so a
    resumed run sees the same order as an uninterrupted one. The epoch is ``set_epoch``'s, or, with
    ``epoch_source`` (e.g. ``lambda: trainer.current_epoch``), read from it when a pass starts.
    ``transform`` (e.g. ``datamodule.inputs``) turns each batch's first tensor into the model's inputs.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int | None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        epoch_source: Callable[[], int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("InMemoryBatches needs tensors of equal length along dim 0")
        self.tensors = tensors
        self.n = len(tensors[0])
        self.batch_size = self.n if batch_size is None else int(batch_size)
        self.shuffle = shuffle and batch_size is not None
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.epoch_source = epoch_source
        self.transform = transform
        self._served = 0  # batches handed out so far in the current pass
        self.rank, self.world_size = 0, 1  # see shard()
        self._resume_state: dict[str, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def n_batches(self) -> int:
        """Batches in one pass. A last, partial batch counts unless dropped or too small to give every
        process a sample."""
        last = self.n % self.batch_size
        return self.n // self.batch_size + (0 if self.drop_last or last < self.world_size else 1)

    def __len__(self) -> int:
        return self.n_batches

    def shard(self, rank: int, world_size: int) -> InMemoryBatches:
        """Serve process ``rank`` of ``world_size`` (DDP) its contiguous 1/world_size share of every
        global batch. The global batches are those of a single process (same order, same size), and DDP
        averages the per-process gradients, so the steps equal single-process ones when each batch
        splits evenly. Lightning shards only DataLoaders, not this iterable, hence this method."""
        if self.batch_size % world_size:
            raise ArgumentError(
                "batch_size",
                f"Invalid batch_size: {self.batch_size} (the global batch must split evenly over {world_size} "
                f"processes: use a multiple of {world_size})",
            )
        self.rank, self.world_size = int(rank), int(world_size)
        dropped = (self.n % self.batch_size) % world_size if not self.drop_last else 0
        if dropped and rank == 0:
            log.warning(
                "the last training batch (%d samples) does not split evenly over %d processes: "
                "its last %d samples are skipped each epoch",
                self.n % self.batch_size,
                world_size,
                dropped,
            )
        return self

    def _bounds(self, i: int) -> tuple[int, int]:
        """Sample positions ``[lo, hi)`` of batch ``i`` for this process."""
        lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.n)
        share = (hi - lo) // self.world_size
        return (lo, hi) if self.world_size == 1 else (lo + self.rank * share, lo + (self.rank + 1) * share)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (a CPU index tensor)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=gen)

    # Mid-epoch resume. Lightning stores ``state_dict()`` of a stateful train loader in every checkpoint
    # (under the checkpoint's ``loops`` entry) and calls ``load_state_dict`` before the resumed
    # epoch's ``iter()``. Our length is known, so Lightning prefetches nothing: when a checkpoint is
    # saved after training on batch ``i``, exactly ``i + 1`` batches have been served, and the resumed pass continues with batch ``i + 1`` of the same
    # ``(seed, epoch)`` order.
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_served": self._served}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self._resume_state = {k: int(v) for k, v in state_dict.items()}

    def _start(self) -> int:
        """First batch of this pass: where a restored state left off (same epoch, mid-pass), else 0."""
        state, self._resume_state = self._resume_state, None
        if state and state["epoch"] == self.epoch and 0 < state["batches_served"] < self.n_batches:
            return state["batches_served"]
        return 0

    def batch(self, i: int, order: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Batch ``i`` of this pass for this process (``order``: the pass's shuffle order, or None)."""
        lo, hi = self._bounds(i)
        if order is not None:
            idx = order[lo:hi]
            batch = tuple(t.index_select(0, idx) for t in self.tensors)
        else:
            batch = tuple(t[lo:hi] for t in self.tensors)
        return batch if self.transform is None else (self.transform(batch[0]), *batch[1:])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        # A generator: the body, epoch included, runs when the first item is taken, i.e. inside the epoch.
        if self.epoch_source is not None:
            self.epoch = int(self.epoch_source())
        start = self._start()
        self._served = start
        order = self.permutation(self.epoch).to(self.tensors[0].device) if self.shuffle else None
        for i in range(start, self.n_batches):
            self._served = i + 1  # counted before the yield: the consumer holds batch i from here on
            yield self.batch(i, order)
