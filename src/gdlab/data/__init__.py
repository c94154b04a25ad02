"""Datamodules: each serves in-memory batches and knows its shapes (and its truth, when it has one)."""

from gdlab.data.base import InMemoryDataModule
from gdlab.data.batches import InMemoryBatches
from gdlab.data.digits import DigitsDataModule
from gdlab.data.images import ImageDataModule
from gdlab.data.linear import LinearDataModule
from gdlab.data.mnist import FashionMNISTDataModule, MNISTDataModule
from gdlab.data.polynomial import PolynomialDataModule
from gdlab.data.table import TableDataModule

__all__ = [
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "InMemoryBatches",
    "InMemoryDataModule",
    "LinearDataModule",
    "MNISTDataModule",
    "PolynomialDataModule",
    "TableDataModule",
]
