"""scikit-learn's 8x8 handwritten digits: 1,797 real images that ship with the package (no download)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gdlab.data.base import split_sizes
from gdlab.data.images import ImageDataModule, Split, seeded_split
from gdlab.errors import ArgumentError

N_IMAGES = 1797  # the size of scikit-learn's digits set


class DigitsDataModule(ImageDataModule):
    """``sklearn.datasets.load_digits``: images (1, 8, 8) with pixel values 0..16, 10 classes.

    Stored as uint8 (``pixel_max = 16``). The 1,797 images are shuffled with ``seed`` and cut into
    train/val/test by the fractions.
    """

    pixel_max = 16

    def __init__(self, val_fraction: float = 0.15, test_fraction: float = 0.15, **kwargs: Any) -> None:
        """``kwargs``: ``normalize`` and the batching arguments of :class:`ImageDataModule`."""
        super().__init__(num_classes=10, **kwargs)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if 0.0 < frac < 1.0 and round(N_IMAGES * frac) < 2:  # (split_sizes would blame n_samples)
                raise ArgumentError(
                    name,
                    f"Invalid {name}: {frac} (leaves that split almost empty of the {N_IMAGES} images: use at least 0.001)",
                )
        split_sizes(N_IMAGES, val_fraction, test_fraction)  # bad fractions fail here, before any loading

    def load_splits(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits  # imported here: sklearn costs start-up time

        digits = load_digits()
        x = torch.from_numpy(digits.images.astype(np.uint8)).unsqueeze(1)  # pixel values are 0..16
        y = torch.from_numpy(digits.target).long()
        sizes = split_sizes(len(x), self.val_fraction, self.test_fraction)
        return dict(zip(("train", "val", "test"), seeded_split(x, y, sizes, self.seed), strict=True))
