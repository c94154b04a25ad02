"""scikit-learn's 8x8 handwritten digits: 1,797 real images that ship with the package (no download)."""

from __future__ import annotations

import torch

from gdlab.data.base import split_sizes
from gdlab.data.images import ImageDataModule, Split, seeded_split
from gdlab.errors import ArgumentError

N_IMAGES = 1797  # the size of scikit-learn's digits set


class DigitsDataModule(ImageDataModule):
    """``sklearn.datasets.load_digits``: images (1, 8, 8) with pixel values 0..16, 10 classes.

    The 1,797 images are shuffled with ``seed`` and cut into train/val/test by the fractions.
    """

    def __init__(
        self,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        normalize: bool = True,
        batch_size: int | None = 64,
        shuffle: bool = True,
        shuffle_seed: int = 0,
        seed: int = 0,
        eval_batch_size: int | None = 1024,
    ) -> None:
        super().__init__(
            num_classes=10,
            normalize=normalize,
            batch_size=batch_size,
            shuffle=shuffle,
            shuffle_seed=shuffle_seed,
            seed=seed,
            eval_batch_size=eval_batch_size,
        )
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
        x = torch.from_numpy(digits.images).float().unsqueeze(1) / 16.0  # pixel values are 0..16
        y = torch.from_numpy(digits.target).long()
        sizes = split_sizes(len(x), self.val_fraction, self.test_fraction)
        return dict(zip(("train", "val", "test"), seeded_split(x, y, sizes, self.seed), strict=True))
