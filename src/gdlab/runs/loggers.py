"""The end of a run for its experiment loggers, once its record and HParams are written.

Lightning finalizes each logger after ``fit`` and after ``test``, before gdlab writes the run's flat
hyperparameters and final metrics (:func:`gdlab.runs.hparams.log_hparams`). :func:`close_loggers` finalizes
them once more with the run's outcome: gdlab's MLflow logger writes the values it still holds and marks
the run FINISHED or FAILED, the CSV logger saves ``hparams.yaml``, gdlab's TensorBoard logger closes its
event file. A W&B run is finished: Lightning's ``WandbLogger`` would otherwise hand the run still open to the
next job of a sweep in the same process, which would write into it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lightning.pytorch.loggers import Logger, WandbLogger

from gdlab.integrations.tensorboard import TensorBoardLogger
from gdlab.runs.record import RESULT_STATUSES

log = logging.getLogger(__name__)


def close_loggers(loggers: Sequence[Logger], status: str) -> None:
    """Finalize every logger with the run's ``status`` (a result: Lightning's "success", else "failed"),
    close TensorBoard's event file and finish the W&B run. A logger that fails here is logged, not raised:
    the run's record is what must be written next."""
    outcome = "success" if status in RESULT_STATUSES else "failed"
    for logger in loggers:
        try:
            logger.finalize(outcome)
            if isinstance(logger, TensorBoardLogger):
                logger.close()  # the run's one event file is complete
        except Exception as err:
            log.warning("the %s logger could not finish the run: %s", type(logger).__name__, err)
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        try:
            wandb.finish(exit_code=0 if outcome == "success" else 1)
        except Exception as err:
            log.warning("W&B could not finish the run: %s", err)
