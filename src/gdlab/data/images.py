"""Shared base for image classification datamodules: (C, H, W) uint8 or float images, int64 class targets."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from gdlab.data.base import InMemoryDataModule
from gdlab.data.standardize import Standardizer
from gdlab.errors import ArgumentError

Split = tuple[torch.Tensor, torch.Tensor]


def seeded_split(x: torch.Tensor, y: torch.Tensor, sizes: tuple[int, ...], seed: int) -> list[Split]:
    """Shuffle ``(x, y)`` with a generator seeded by ``seed`` and cut it into consecutive ``sizes``: one
    copy of ``x`` in all (row gathers: ``index_select`` is several times faster than ``x[idx]``)."""
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    return [(x.index_select(0, idx), y.index_select(0, idx)) for idx in order.split(list(sizes))]


def check_val_fraction(val_fraction: float) -> float:
    if not 0.0 < val_fraction < 1.0:
        raise ArgumentError(
            "val_fraction", f"Invalid val_fraction: {val_fraction} (must be strictly between 0 and 1)"
        )
    return val_fraction


def holdout_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) sizes when the test split is fixed by the dataset; both must be non-empty."""
    n_val = round(n * check_val_fraction(val_fraction))
    if not 1 <= n_val < n:
        raise ArgumentError(
            "val_fraction",
            f"Invalid val_fraction: {val_fraction} of {n} training images leaves an empty split "
            f"(train={n - n_val}, val={n_val}): choose a fraction that keeps both non-empty",
        )
    return n - n_val, n_val


class ImageDataModule(InMemoryDataModule):
    """Subclasses implement :meth:`load_splits`; this base checks the labels and standardises each channel
    with training-split statistics, kept in :meth:`state_dict` (and so in every checkpoint).

    The splits hold the images as stored (uint8 takes a quarter of float32's memory); :meth:`inputs` turns
    a batch of them into the model's inputs as the batches are served.
    """

    task = "classification"
    pixel_max: ClassVar[int] = 255  # uint8 images hold 0..pixel_max, the model sees pixel / pixel_max

    def __init__(
        self,
        num_classes: int = 10,
        normalize: bool = True,
        batch_size: int | None = 64,
        shuffle: bool = True,
        shuffle_seed: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = 1024,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            shuffle_seed=shuffle_seed,
            eval_batch_size=eval_batch_size,
        )
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ArgumentError(
                "num_classes", f"Invalid num_classes: {num_classes!r} (must be an integer >= 2)"
            )
        self.num_classes = num_classes
        self.normalize = normalize
        self.standardizer = Standardizer(dims=(0, 2, 3))  # one mean/std per channel

    def load_splits(self) -> dict[str, Split]:
        """Return ``{"train", "val", "test"}`` -> ``(x (N, C, H, W), y int64 (N,))``; ``x`` is uint8 with
        values 0..``pixel_max``, or floating point scaled to [0, 1]."""
        raise NotImplementedError

    @property
    def num_outputs(self) -> int:
        return self.num_classes

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The model's inputs for stored images ``x``: float32 ``x / pixel_max`` (uint8), then standardised."""
        if x.dtype == torch.uint8:
            x = x.float() / self.pixel_max
        return self.standardizer(x) if self.normalize else x

    def build(self) -> dict[str, Split]:
        splits = self.load_splits()
        for name, (x, y) in splits.items():
            if x.ndim != 4 or y.dtype != torch.int64 or len(x) != len(y):
                raise ValueError(
                    f"{type(self).__name__}.load_splits()[{name!r}]: need (N, C, H, W) images, int64 (N,) labels"
                )
            if x.dtype != torch.uint8 and not x.is_floating_point():
                raise ValueError(
                    f"{type(self).__name__}.load_splits()[{name!r}]: images are {x.dtype}, need uint8 or float"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ArgumentError(
                    "num_classes",
                    f"the {name} labels span {int(y.min())}..{int(y.max())} but num_classes={self.num_classes}: "
                    "fix num_classes or the label files",
                )
        x = splits["train"][0]
        counts = pixel_counts(x) if x.dtype == torch.uint8 else None
        if counts is not None and counts[:, self.pixel_max + 1 :].any():
            raise ValueError(
                f"{type(self).__name__}.load_splits()['train']: pixel values above pixel_max={self.pixel_max}"
            )
        if self.normalize and not self.standardizer.fitted:  # training split only
            if counts is None:
                self.standardizer.fit(x)
            else:  # from the pixel counts: no float copy of the split
                counts = counts[:, : self.pixel_max + 1]
                values = (
                    torch.arange(counts.shape[1]).float() / self.pixel_max
                )  # exactly as inputs() has them
                self.standardizer.fit_histogram(values, counts.reshape(len(counts), 1, 1, -1))
        return splits

    def state_dict(self) -> dict[str, Any]:
        return {"standardizer": self.standardizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training statistics (e.g. from a checkpoint); :meth:`inputs` uses them from now on."""
        self.standardizer.load_state_dict(state_dict.get("standardizer", {}))


def pixel_counts(x: torch.Tensor) -> torch.Tensor:
    """How often each value 0..255 occurs in each channel of uint8 images ``(N, C, H, W)``: ``(C, 256)``."""
    return torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])])
