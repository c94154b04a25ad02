"""Standardisation ``(x - mean) / std`` with statistics fitted on the training split only.

The statistics are plain lists in ``state_dict`` (Lightning stores a datamodule's ``state_dict`` in
every checkpoint), so evaluation and prediction transform new inputs exactly as training did and the
checkpoint still loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


class Standardizer:
    """Per-feature (or per-channel) ``(x - mean) / std``; ``dims`` are the dimensions averaged over.

    ``dims=(0,)`` on ``(n, d)`` features gives one mean per feature; ``dims=(0, 2, 3)`` on
    ``(n, C, H, W)`` images one per channel. A constant feature keeps ``std = 1`` (no division by 0).
    """

    def __init__(self, dims: Sequence[int] = (0,)) -> None:
        self.dims = tuple(dims)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    @property
    def fitted(self) -> bool:
        return self.mean is not None

    def fit(self, x: torch.Tensor) -> Standardizer:
        x = x.double()
        self.mean = x.mean(dim=self.dims, keepdim=True)[0]
        std = x.std(dim=self.dims, keepdim=True, unbiased=False)[0]
        self.std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return self

    def fit_histogram(self, values: torch.Tensor, counts: torch.Tensor) -> Standardizer:
        """The statistics of data that takes only the ``values`` (K,), ``counts[..., k]`` times each: one
        mean/std per leading index of ``counts`` (e.g. ``(C, 1, 1, K)`` for images), no copy of the data."""
        values, counts = values.double(), counts.double()
        n = counts.sum(-1)
        self.mean = (counts * values).sum(-1) / n
        std = ((counts * (values - self.mean.unsqueeze(-1)) ** 2).sum(-1) / n).sqrt()
        self.std = torch.where(std > 1e-12, std, torch.ones_like(std))
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer.fit(train_x) (or load_state_dict) must come before transforming")
        out = x.to(torch.float64, copy=True).sub_(self.mean).div_(self.std)  # in place: one float64 copy
        return out.to(x.dtype if x.is_floating_point() else torch.float32)

    def state_dict(self) -> dict[str, Any]:
        if self.mean is None or self.std is None:
            return {}
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.mean = torch.tensor(state["mean"], dtype=torch.float64)
            self.std = torch.tensor(state["std"], dtype=torch.float64)
