"""TensorBoard for gdlab runs: Lightning's ``TensorBoardLogger`` with one event file per run.

Lightning closes a logger's event file at the end of every ``trainer.fit`` and ``trainer.test``, and
the next write opens another file: a run that tests its final weights and adds its HParams entry would
leave three. This logger only flushes at those points; :func:`gdlab.train.train` closes it once the
run's record is complete. ``max_queue`` (events waiting for the writer thread) is larger than
``SummaryWriter``'s 10, so a block of per-step values never waits for the disk, and each step's values
are one event instead of one per value.

It also writes, once per event file, the Custom Scalars dashboard's ``layout`` (from the logger's
config: the losses first, train and val on one chart), and the run's HParams entry
(:meth:`TensorBoardLogger.log_hparams_entry`). Lightning's ``hparams.yaml`` is not written: the run
directory's ``config.yaml`` holds the same config.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from torch import Tensor

from gdlab.integrations.tensorboard import use_fast_checksums
from gdlab.runs import hparams_events

# category -> chart title -> tag regexes drawn on that chart
Layout = Mapping[str, Mapping[str, Sequence[str]]]


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` (same arguments), writing one event file per run.

    Args:
        layout: the Custom Scalars dashboard, ``{category: {chart title: [tag regex, ...]}}``; every
            tag a regex matches is a line of that chart (categories and charts in this order).
        max_queue: events waiting for the writer thread.
    """

    def __init__(
        self, *args: Any, layout: Layout | None = None, max_queue: int = 1000, **kwargs: Any
    ) -> None:
        super().__init__(*args, max_queue=max_queue, **kwargs)
        self.prefix = str(kwargs.get("prefix") or "")  # Lightning's argument: tags read ``<prefix>-<name>``
        self.layout = {
            str(category): {str(title): [str(tag) for tag in tags] for title, tags in charts.items()}
            for category, charts in (layout or {}).items()
        }
        self._layout_written = False
        use_fast_checksums()

    def _write_layout(self) -> None:
        """The Custom Scalars layout, once, before the run's first values."""
        if self.layout and not self._layout_written:
            self._layout_written = True
            self.experiment.add_custom_scalars(
                {
                    category: {title: ["Multiline", tags] for title, tags in charts.items()}
                    for category, charts in self.layout.items()
                }
            )

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
        self._write_layout()
        super().log_hyperparams(params, metrics=metrics, step=step)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Every scalar of one call in one event (``add_scalar`` writes an event per value): the same
        values at the same step for TensorBoard, at a fraction of the cost per step."""
        self._write_layout()
        scalars, rest = [], {}
        for name, value in metrics.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tag = f"{self.prefix}{self.LOGGER_JOIN_CHAR}{name}" if self.prefix else name
                scalars.append(Summary.Value(tag=tag, simple_value=float(value)))
            else:
                rest[name] = value  # dicts (add_scalars) and anything else: Lightning's way, and its error
        if scalars:
            self.experiment.file_writer.add_summary(Summary(value=scalars), step)
        if rest:
            super().log_metrics(rest, step=step)

    @rank_zero_only
    def log_hparams_entry(
        self,
        params: Mapping[str, str | float | int | bool],
        metrics: Mapping[str, float],
        step: int,
        trial_id: str,
        status: str | None,
        shown: Collection[str] = (),
        per_step: Collection[str] = (),
    ) -> None:
        """The run's row in the HParams dashboard: ``params`` (``shown`` ones displayed first), the final
        ``metrics``, named ``trial_id``, ended with ``status``. The metrics are also written as scalars
        where the run wrote their last values: at ``step`` (the steps taken: epoch and test metrics), and
        one step before for the ``per_step`` ones (the last optimizer step's ``train/loss``, ``diag/*``)."""
        last_step = {k: v for k, v in metrics.items() if k in per_step}
        if last_step:
            self.log_metrics(last_step, max(step - 1, 0))
        if len(last_step) < len(metrics):
            self.log_metrics({k: v for k, v in metrics.items() if k not in per_step}, step)
        writer = self.experiment.file_writer
        for summary in hparams_events.entry(params, list(metrics), trial_id, status, shown):
            writer.add_summary(summary, step)

    @rank_zero_only
    def save(self) -> None:
        """Flush the events (Lightning's would also write ``hparams.yaml``, which config.yaml holds)."""
        self.experiment.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """The end of a fit or test: flush the events, but keep the file open."""
        self.experiment.flush()

    @rank_zero_only
    def close(self) -> None:
        """The end of the run: close the event file."""
        self.experiment.close()
