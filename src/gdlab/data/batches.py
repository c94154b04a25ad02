"""In-memory batching by slicing: the fast replacement for ``DataLoader(TensorDataset)``."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class InMemoryBatches:
    """Serves ``(x, y)`` batches by slicing tensors that already sit in memory.

    One index-tensor gather per batch (when shuffling) instead of a ``__getitem__`` call per
    sample plus collate. ``batch_size=None`` yields the whole split as one batch (full-batch
    gradient descent). The shuffle order of epoch ``e`` depends only on ``(seed, e)``, so a
    resumed run sees the same order as an uninterrupted one.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int | None,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
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

    # Lightning's fit loop calls ``loader.sampler.set_epoch(epoch)`` at each epoch start;
    # exposing ourselves as the "sampler" is how a plain iterable receives the epoch.
    # (Lightning reads ``batch_sampler`` whenever ``sampler`` exists.)
    batch_sampler = None

    @property
    def sampler(self) -> InMemoryBatches:
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n // self.batch_size
        return -(-self.n // self.batch_size)

    def permutation(self, epoch: int) -> torch.Tensor:
        """The sample order of ``epoch`` (a CPU index tensor)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=gen)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        bs = self.batch_size
        if self.shuffle:
            order = self.permutation(self.epoch).to(self.tensors[0].device)
            for i in range(len(self)):
                idx = order[i * bs : (i + 1) * bs]
                yield tuple(t.index_select(0, idx) for t in self.tensors)
        else:
            for i in range(len(self)):
                yield tuple(t[i * bs : (i + 1) * bs] for t in self.tensors)
