"""A lesson's picture as a PNG next to the runs and as an image in TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gdlab.callbacks import figures


def add_figure(directory: Path, tag: str, fig: Any) -> Path:
    """Save ``fig`` as ``<directory>/<last part of tag>.png`` and log it under ``tag`` to an event file in
    ``directory`` (``tensorboard --logdir <directory>``: Images)."""
    from torch.utils.tensorboard import SummaryWriter

    image = figures.to_rgb(fig)
    path = directory / f"{tag.split('/')[-1]}.png"
    figures.save_png(image, path)
    with SummaryWriter(str(directory)) as writer:
        writer.add_image(tag, image, global_step=0, dataformats="HWC")
    return path
