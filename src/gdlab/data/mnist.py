"""MNIST and Fashion-MNIST from their standard IDX files in ``data_dir`` (downloaded and verified if missing)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from gdlab.data.idx import cache_key, fetch_idx_files, read_idx_cached
from gdlab.data.images import ImageDataModule, Split, check_val_fraction, holdout_sizes, seeded_split
from gdlab.errors import ArgumentError


class MNISTDataModule(ImageDataModule):
    """28x28 grey-level digits: 60,000 training images (a seeded ``val_fraction`` of them held out for
    validation) and the official 10,000 test images.

    Args:
        data_dir: folder holding the four IDX files (``*-ubyte.gz`` or uncompressed); each file's decoded
            array is cached next to it (``<file>.<md5>.gdlab-cache.npy``) when the folder can be written to.
        download: fetch missing files from ``mirrors`` (progress bar, md5-verified).
        mirrors: base URLs tried in order (``null``: the standard ones).
        md5: gzipped file name -> md5, for files of your own (the others keep the published checksums).
        val_fraction: share of the training images held out for validation.
        download_timeout: seconds to wait, over all mirrors, for a server that does not answer.
        kwargs: ``normalize`` and the batching arguments of ``ImageDataModule``.
    """

    name: ClassVar[str] = "MNIST"
    # The standard files and their published md5 (the same as torchvision's MNIST.resources).
    MIRRORS: ClassVar[tuple[str, ...]] = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    )
    MD5: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    }

    def __init__(
        self,
        data_dir: str = "data/mnist",
        download: bool = True,
        mirrors: Sequence[str] | None = None,
        md5: Mapping[str, str] | None = None,
        val_fraction: float = 0.1,
        download_timeout: float = 20.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes=10, **kwargs)
        check_val_fraction(val_fraction)  # fails here, before any file is read
        unknown = sorted(set(md5 or {}) - set(self.MD5))
        if unknown:
            raise ArgumentError(
                "md5", f"Invalid md5: {', '.join(unknown)} is not one of the files ({', '.join(self.MD5)})"
            )
        if not download_timeout > 0:
            raise ArgumentError(
                "download_timeout", f"Invalid download_timeout: {download_timeout} (must be > 0)"
            )
        self.data_dir, self.download = data_dir, download
        self.mirrors = list(mirrors) if mirrors is not None else list(self.MIRRORS)
        self.md5 = {**self.MD5, **(md5 or {})}
        self.val_fraction, self.download_timeout = val_fraction, download_timeout

    def load_splits(self) -> dict[str, Split]:
        try:
            paths = fetch_idx_files(
                self.data_dir, self.md5, self.mirrors, self.download, self.name, self.download_timeout
            )
            (x, y), test = self._read(paths, "train"), self._read(paths, "t10k")
        except (ValueError, OSError) as err:  # a file missing, unreadable or not the expected one
            raise ArgumentError("data_dir", str(err)) from err
        train, val = seeded_split(x, y, holdout_sizes(len(x), self.val_fraction), self.seed)
        return {"train": train, "val": val, "test": test}

    def _read(self, paths: Mapping[str, Path], prefix: str) -> Split:
        """uint8 images (N, 1, H, W) and int64 labels of one file pair (``train`` or ``t10k``)."""
        images, labels = (
            self._decoded(paths, f"{prefix}-{kind}-ubyte.gz") for kind in ("images-idx3", "labels-idx1")
        )
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{self.name} {prefix}: expected images (N, H, W) and N labels, got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}: replace the files in {self.data_dir} with the originals"
            )
        if images.dtype != torch.uint8:
            raise ValueError(
                f"{self.name} {prefix}: expected uint8 images, got {images.dtype}: "
                f"replace the files in {self.data_dir} with the originals"
            )
        return images.unsqueeze(1), labels.long()

    def _decoded(self, paths: Mapping[str, Path], name: str) -> torch.Tensor:
        """One file's array, through its cache next to it (keyed by the verified md5 of a ``.gz``)."""
        path = paths[name]
        return read_idx_cached(path, cache_key(path, self.md5[name] if path.name == name else None))


class FashionMNISTDataModule(MNISTDataModule):
    """Zalando's Fashion-MNIST: the same IDX layout and sizes as MNIST, 10 clothing classes."""

    name: ClassVar[str] = "Fashion-MNIST"
    MIRRORS: ClassVar[tuple[str, ...]] = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
    MD5: ClassVar[dict[str, str]] = {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    }
