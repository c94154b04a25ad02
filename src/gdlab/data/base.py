"""Shared base for datamodules whose splits fit in memory as tensors."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch

from gdlab.analysis import Reference, reference
from gdlab.data.batches import InMemoryBatches
from gdlab.errors import ArgumentError


def check_batch_size(batch_size: Any, argument: str = "batch_size") -> int | None:
    """``None`` (full batch) or a positive int; anything else is a clear error."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ArgumentError(
            argument,
            f"Invalid {argument}: {batch_size!r} (must be an integer >= 1, or None for full-batch gradient descent)",
        )
    return batch_size


def check_seed(seed: Any, argument: str = "seed") -> int:
    """A seed torch and numpy both take: an integer from 0 to 2**32 - 1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ArgumentError(
            argument, f"Invalid {argument}: {seed!r} (must be an integer from 0 to {2**32 - 1})"
        )
    return seed


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_fits_in_memory(n_samples: int, width: int, argument: str, columns: str) -> None:
    """Refuse generated data (``n_samples`` rows of ``width`` float64 columns and a target) larger than this
    machine's memory, naming the larger of the two sizes: torch's own failure is an allocator message that
    names neither (``can't allocate memory: you tried to allocate 8000000000000000 bytes``)."""
    needed, memory = n_samples * (width + 1) * 8, physical_memory()
    if memory is None or needed <= memory:
        return
    name, value = ("n_samples", n_samples) if n_samples >= width else (argument, width)
    raise ArgumentError(
        name,
        f"Invalid {name}: {value} ({n_samples} samples x {width} {columns} in float64 need "
        f"{needed / 2**30:.3g} GiB, more than this machine's {memory / 2**30:.3g} GiB of memory)",
    )


def split_sizes(n_samples: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Sizes of train/val/test; every split must keep at least one sample."""
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < frac < 1.0:
            raise ArgumentError(name, f"Invalid {name}: {frac} (must be strictly between 0 and 1)")
    if val_fraction + test_fraction >= 1.0:
        raise ArgumentError(
            "val_fraction",
            f"Invalid val_fraction + test_fraction: {val_fraction + test_fraction} (leaves no training data: "
            "keep the sum below 1)",
        )
    n_val, n_test = round(n_samples * val_fraction), round(n_samples * test_fraction)
    n_train = n_samples - n_val - n_test
    if min(n_train, n_val, n_test) < 2:  # R^2 (and any variance) needs two samples per split
        raise ArgumentError(
            "n_samples",
            f"Invalid n_samples: {n_samples} (too small for the splits: train={n_train}, val={n_val}, "
            f"test={n_test}; each needs >= 2)",
        )
    return n_train, n_val, n_test


class InMemoryDataModule(L.LightningDataModule):
    """A datamodule whose train/val/test splits are ``(x, y)`` tensors built once in ``setup``.

    Subclasses implement :meth:`build` and set ``task``; the rest (batching, shapes the model
    adapts to) is shared.
    """

    task: str = "regression"  # or "classification"

    def __init__(
        self,
        batch_size: int | None = 64,
        seed: int = 0,
        shuffle: bool = True,
        shuffle_seed: int = 0,
        eval_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        self.batch_size = check_batch_size(batch_size)
        self.shuffle = shuffle
        self.shuffle_seed = check_seed(shuffle_seed, "shuffle_seed")
        self.eval_batch_size = check_batch_size(eval_batch_size, "eval_batch_size")
        self.seed = check_seed(seed)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def build(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Return ``{"train": (x, y), "val": (x, y), "test": (x, y)}``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:  # idempotent: train.py calls it before Lightning does
            self.splits = self.build()

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's inputs for stored samples ``x`` (a batch of ``splits[...][0]``); here ``x`` itself.
        Applied to every batch served, so anything that feeds ``splits`` to the model must apply it too."""
        return x

    @property
    def input_shape(self) -> tuple[int, ...]:
        self.setup()
        return tuple(self.splits["train"][0].shape[1:])

    @property
    def num_outputs(self) -> int:
        """Output size of the model: target width for regression, class count for classification."""
        self.setup()
        y = self.splits["train"][1]
        return int(y.shape[1]) if y.ndim > 1 else 1

    def _batches(self, split: str, train: bool) -> InMemoryBatches:
        self.setup()
        x, y = self.splits[split]
        bs = self.batch_size if train else (self.eval_batch_size or self.batch_size)
        return InMemoryBatches(
            x, y, batch_size=bs, shuffle=train and self.shuffle, seed=self.shuffle_seed, transform=self.inputs
        )

    def train_dataloader(self) -> InMemoryBatches:
        batches = self._batches("train", train=True)
        trainer = self.trainer  # set by Lightning; None when called by hand
        if trainer is not None:
            batches.epoch_source = lambda: trainer.current_epoch  # each epoch's own shuffle order
        if trainer is not None and trainer.world_size > 1:
            # DDP: each process takes its share of every global batch (val/test: every process sees
            # the whole split, so the epoch metrics are the single-process ones).
            batches.shard(trainer.global_rank, trainer.world_size)
        return batches

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", train=False)

    def predict_dataloader(self) -> InMemoryBatches:
        return self._batches("test", train=False)

    def closed_form(self, bias: bool = True) -> Reference | None:
        """The least-squares reference of the linear model on this data's features (train split, float64):
        ``w``, ``b``, the loss ``L*``, the Hessian's spectrum and full-batch GD's critical learning rate.

        Any regression datamodule has it (polynomial features included: it is least squares on whatever
        ``build()`` returns); ``None`` for classification. Computed once, on first use.
        """
        if self.task != "regression":
            return None
        if not hasattr(self, "_closed_form"):
            self._closed_form: dict[bool, Reference] = {}
        if bias not in self._closed_form:
            self.setup()
            x, y = self.splits["train"]
            self._closed_form[bias] = reference(x.flatten(1), y, bias=bias)
        return self._closed_form[bias]
