"""Polynomial regression as linear regression: ``y = c0 + c1 x + ... + cK x^K + noise`` on features
``[x, x^2, ..., x^degree]``, standardised with training-split statistics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from gdlab.data.base import InMemoryDataModule, check_fits_in_memory, split_sizes
from gdlab.data.standardize import Standardizer
from gdlab.errors import ArgumentError


def check_degree(degree: Any) -> int:
    if isinstance(degree, bool) or not isinstance(degree, int) or degree < 1:
        raise ArgumentError(
            "degree",
            f"Invalid degree: {degree!r} (must be an integer >= 1: the features are x, x^2, ..., x^degree)",
        )
    return degree


class PolynomialDataModule(InMemoryDataModule):
    """x uniform on ``[x_min, x_max]``, targets from a known polynomial plus Gaussian noise.

    ``degree`` may differ from the true degree (``len(coefficients) - 1``) to show under- and
    over-fitting. With ``standardize`` the model sees ``(x^k - mean_k) / std_k``, the statistics
    computed on the training split only and kept in :meth:`state_dict`; without it the raw powers,
    whose Hessian is badly conditioned (the condition number explodes with the degree).
    The ``linear`` model on these features is polynomial regression: :meth:`raw_coefficients` maps
    its weights back to ``c0..c_degree`` in the basis ``1, x, ..., x^degree``.

    Args:
        n_samples: total samples before the train/val/test split.
        degree: the model's polynomial degree (number of features), >= 1.
        coefficients: the true polynomial ``[c0, c1, ..., cK]`` (constant term first).
        noise_std: standard deviation of the additive Gaussian noise on y.
        x_min, x_max: the interval x is drawn from (uniformly).
        standardize: standardise the features (train-split statistics); false: raw powers of x.
        val_fraction, test_fraction, batch_size, shuffle, shuffle_seed, seed: as in ``LinearDataModule``.
    """

    task = "regression"

    def __init__(
        self,
        n_samples: int = 1000,
        degree: int = 3,
        coefficients: Sequence[float] = (1.0, -2.0, 0.0, 0.5),
        noise_std: float = 0.3,
        x_min: float = -3.0,
        x_max: float = 3.0,
        standardize: bool = True,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        batch_size: int | None = 32,
        shuffle: bool = True,
        shuffle_seed: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, shuffle=shuffle, shuffle_seed=shuffle_seed)
        self.degree = check_degree(degree)
        if not coefficients:
            raise ArgumentError(
                "coefficients",
                "Invalid coefficients: empty (give the true polynomial [c0, c1, ...], e.g. [1, -2, 0, 0.5])",
            )
        if noise_std < 0:
            raise ArgumentError("noise_std", f"Invalid noise_std: {noise_std} (must be >= 0)")
        if not x_min < x_max:
            raise ArgumentError("x_min", f"Invalid x_min: {x_min} (must be below x_max={x_max})")
        self.sizes = split_sizes(n_samples, val_fraction, test_fraction)
        check_fits_in_memory(n_samples, self.degree, "degree", "powers of x")
        self.n_samples, self.noise_std, self.x_min, self.x_max = n_samples, noise_std, x_min, x_max
        self.coefficients = torch.tensor([float(c) for c in coefficients], dtype=torch.float64)
        self.standardize = standardize
        self.standardizer = Standardizer(dims=(0,))
        self.raw_x: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # split -> (x, y), float64

    def powers(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features ``[x, x^2, ..., x^degree]`` of a 1-d tensor, shape ``(n, degree)``, float64."""
        exponents = torch.arange(1, self.degree + 1, dtype=torch.float64)
        return x.double().reshape(-1, 1) ** exponents

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees for inputs ``x``: powers, standardised with the training statistics."""
        self.setup()
        feats = self.powers(x)
        return (self.standardizer(feats) if self.standardize else feats).float()

    def build(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        if not self.raw_x:
            gen = torch.Generator().manual_seed(self.seed)
            x = self.x_min + (self.x_max - self.x_min) * torch.rand(
                self.n_samples, generator=gen, dtype=torch.float64
            )
            noise = self.noise_std * torch.randn(self.n_samples, generator=gen, dtype=torch.float64)
            y = self._true_polynomial(x) + noise
            n_train, n_val, _ = self.sizes
            bounds = {
                "train": (0, n_train),
                "val": (n_train, n_train + n_val),
                "test": (n_train + n_val, None),
            }
            self.raw_x = {k: (x[a:b], y[a:b]) for k, (a, b) in bounds.items()}
        if self.standardize and not self.standardizer.fitted:
            self.standardizer.fit(self.powers(self.raw_x["train"][0]))  # training split only
        splits = {}
        for name, (x, y) in self.raw_x.items():
            feats = self.powers(x)
            splits[name] = (
                (self.standardizer(feats) if self.standardize else feats).float(),
                y.float().unsqueeze(1),
            )
        return splits

    def _true_polynomial(self, x: torch.Tensor) -> torch.Tensor:
        exponents = torch.arange(len(self.coefficients), dtype=torch.float64)
        return (x.reshape(-1, 1) ** exponents) @ self.coefficients

    def raw_coefficients(self, w: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
        """Map the linear model's ``(w, b)`` on the model's features to ``[c0, ..., c_degree]`` on ``1, x, ...``.

        On standardised features ``y = b + sum_k w_k (x^k - mean_k) / std_k``, so
        ``c_k = w_k / std_k`` and ``c0 = b - sum_k w_k mean_k / std_k``.
        """
        self.setup()
        w, b = (
            torch.as_tensor(w, dtype=torch.float64).reshape(-1),
            torch.as_tensor(b, dtype=torch.float64).reshape(()),
        )
        if self.standardize:
            mean, std = self.standardizer.mean, self.standardizer.std
            return torch.cat([(b - (w * mean / std).sum()).reshape(1), w / std])
        return torch.cat([b.reshape(1), w])

    def true_params(self) -> dict[str, torch.Tensor]:
        """The polynomial the data was generated with, as a person writes it: ``{"c0": 1.0, "c1": -2.0,
        ...}`` for ``1 - 2x + ...`` (constant term first), whatever ``degree`` and ``standardize`` are."""
        return {f"c{k}": c for k, c in enumerate(self.coefficients)}

    def true_weights(self) -> dict[str, torch.Tensor]:
        """The truth in the model's basis (``w`` on the features, ``b``), when ``degree`` can express it.

        Empty when ``degree`` is below the true degree (under-fitting: no weights reproduce the truth).
        The diagnostics measure ``diag/dist_to_truth`` against it; :meth:`true_params` is the raw truth.
        """
        self.setup()
        true_degree = len(self.coefficients) - 1
        if self.degree < true_degree:
            return {}
        c = torch.cat([self.coefficients, torch.zeros(self.degree - true_degree, dtype=torch.float64)])
        if not self.standardize:
            return {"w": c[1:], "b": c[0]}
        mean, std = self.standardizer.mean, self.standardizer.std
        return {"w": c[1:] * std, "b": c[0] + (c[1:] * mean).sum()}

    def state_dict(self) -> dict[str, Any]:
        return {"standardizer": self.standardizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training statistics (e.g. from a checkpoint) and re-transform built splits."""
        self.standardizer.load_state_dict(state_dict.get("standardizer", {}))
        self.__dict__.pop("_closed_form", None)  # a cached least-squares reference used the old features
        if self.splits:
            self.splits = self.build()
