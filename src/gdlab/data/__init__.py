"""Datamodules: each serves in-memory batches and knows its shapes (and its truth, when it has one)."""

from gdlab.data.base import InMemoryDataModule
from gdlab.data.batches import InMemoryBatches
from gdlab.data.linear import LinearDataModule

__all__ = ["InMemoryBatches", "InMemoryDataModule", "LinearDataModule"]
