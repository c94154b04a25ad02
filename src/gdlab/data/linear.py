"""Synthetic linear regression data: ``y = X w* + b* + noise`` with known ``w*``, ``b*``."""

from __future__ import annotations

import torch

from gdlab.data.base import InMemoryDataModule, check_fits_in_memory, split_sizes
from gdlab.errors import ArgumentError


class LinearDataModule(InMemoryDataModule):
    """Gaussian features, a random true line, Gaussian noise; the truth is kept in ``true_w``/``true_b``.

    Args:
        n_samples: total samples before the train/val/test split.
        n_features: number of input features (the model's input size follows from it).
        noise_std: standard deviation of the additive Gaussian noise.
        val_fraction, test_fraction: split fractions; train gets the rest.
        batch_size: samples per step, or ``None`` for full-batch gradient descent.
        shuffle: reshuffle the training split every epoch.
        shuffle_seed: seed of the shuffle order (wired to the run's ``seed`` in config).
        seed: data seed (features, truth, noise and split).
        feature_scales: optional per-feature scales, to build ill-conditioned problems.
    """

    task = "regression"

    def __init__(
        self,
        n_samples: int = 2000,
        n_features: int = 5,
        noise_std: float = 0.1,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        batch_size: int | None = 64,
        shuffle: bool = True,
        shuffle_seed: int = 0,
        seed: int = 0,
        feature_scales: list[float] | None = None,
        true_w: list[float] | None = None,
        true_b: float | None = None,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, shuffle=shuffle, shuffle_seed=shuffle_seed)
        if n_features < 1:
            raise ArgumentError("n_features", f"Invalid n_features: {n_features} (must be >= 1)")
        if noise_std < 0:
            raise ArgumentError("noise_std", f"Invalid noise_std: {noise_std} (must be >= 0)")
        for name, vec in (("feature_scales", feature_scales), ("true_w", true_w)):
            if vec is not None and len(vec) != n_features:
                raise ArgumentError(
                    name, f"Invalid {name}: {len(vec)} entries but n_features={n_features} (make them match)"
                )
        self.sizes = split_sizes(n_samples, val_fraction, test_fraction)
        check_fits_in_memory(n_samples, n_features, "n_features", "features")
        self.n_samples, self.n_features, self.noise_std = n_samples, n_features, noise_std
        self.feature_scales, self._true_w, self._true_b = feature_scales, true_w, true_b

    def build(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)
        d = self.n_features
        # Drawn unconditionally so the stream (and so X and noise) does not depend on which are given.
        w = torch.randn(d, 1, generator=gen, dtype=torch.float64)
        b = torch.randn((), generator=gen, dtype=torch.float64)
        if self._true_w is not None:
            w = torch.tensor(self._true_w, dtype=torch.float64).reshape(d, 1)
        if self._true_b is not None:
            b = torch.tensor(float(self._true_b), dtype=torch.float64)
        x = torch.randn(self.n_samples, d, generator=gen, dtype=torch.float64)
        if self.feature_scales is not None:
            x = x * torch.tensor(self.feature_scales, dtype=torch.float64)
        y = x @ w + b + self.noise_std * torch.randn(self.n_samples, 1, generator=gen, dtype=torch.float64)
        self.true_w, self.true_b = w.reshape(-1), b
        n_train, n_val, _ = self.sizes
        x, y = x.float(), y.float()
        return {
            "train": (x[:n_train], y[:n_train]),
            "val": (x[n_train : n_train + n_val], y[n_train : n_train + n_val]),
            "test": (x[n_train + n_val :], y[n_train + n_val :]),
        }

    def true_params(self) -> dict[str, torch.Tensor]:
        """The parameters the data was generated with (float64)."""
        self.setup()
        return {"w": self.true_w, "b": self.true_b}

    def true_weights(self) -> dict[str, torch.Tensor]:
        """The truth in the linear model's basis: the features are the data, so :meth:`true_params`."""
        return self.true_params()
