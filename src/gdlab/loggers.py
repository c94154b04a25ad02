"""TensorBoard for gdlab runs: Lightning's ``TensorBoardLogger`` with one event file per run.

Lightning closes a logger's event file at the end of every ``trainer.fit`` and ``trainer.test``, and
the next write opens another file: a run that tests its final weights and adds its HParams entry would
leave three. This logger only flushes at those points; :func:`gdlab.train.train` closes it once the
run's record is complete. ``max_queue`` (events waiting for the writer thread) is larger than
``SummaryWriter``'s 10, so a block of per-step values never waits for the disk.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from gdlab.integrations.tensorboard import use_fast_checksums


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` (same arguments), writing one event file per run."""

    def __init__(self, *args: Any, max_queue: int = 1000, **kwargs: Any) -> None:
        super().__init__(*args, max_queue=max_queue, **kwargs)
        use_fast_checksums()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """The end of a fit or test: flush the events and save hparams.yaml, but keep the file open."""
        self.experiment.flush()
        if status == "success":
            self.save()

    @rank_zero_only
    def close(self) -> None:
        """The end of the run: close the event file."""
        self.experiment.close()
