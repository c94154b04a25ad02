"""TensorBoard for gdlab runs: Lightning's ``TensorBoardLogger``, one event file per run, one event per step.

What it relies on beyond Lightning's and TensorBoard's documented API, each checked by
``tests/test_integrations.py``:

- **One event file per run.** Lightning calls ``logger.finalize`` at the end of every ``trainer.fit`` and
  ``trainer.test``, and its ``TensorBoardLogger.finalize`` closes the ``SummaryWriter``: the next write
  opens another file, so a run that tests its final weights and adds its HParams entry would leave three.
  Here ``finalize`` flushes, and :meth:`TensorBoardLogger.close` (called by ``gdlab.train`` once the run's
  record is complete) closes the file.
- **One event per logged step.** ``SummaryWriter.add_scalar`` writes an event per value (9 values a step
  in the default run: ~0.3 s of a 4 s run). :meth:`TensorBoardLogger.log_metrics` writes all of a call's
  scalars as one ``Summary`` through the writer's ``file_writer`` (the same tags, steps and values), and
  the HParams entry's three summaries the same way.
- **The HParams entry.** TensorBoard's ``hparams_pb`` (``hparams.api``, importable without TensorFlow as ``summary_v2``) builds the
  row's values; its builders of the columns and of how a session ended need TensorFlow (``hparams.summary``) or cannot mark the columns
  to show first (``hparams_config_pb``), so those two are built from the plugin's protos, as torch's
  ``torch.utils.tensorboard.summary.hparams`` builds them.
- **Checksums in C.** Every record carries a masked CRC32C of its bytes; without TensorFlow, TensorBoard
  computes it in pure Python (~45% of the cost of a logged step). :func:`use_fast_checksums` swaps in
  google-crc32c's C implementation of that one function of ``tensorboard.summary.writer.record_writer``:
  the same bytes. Where either piece is missing, TensorBoard works as it always does.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2, summary_v2
from tensorboard.summary.writer import record_writer
from torch import Tensor

_MASK = 0xFFFFFFFF

# category -> chart title -> tag regexes drawn on that chart
Layout = Mapping[str, Mapping[str, Sequence[str]]]

# How a run's status shows in the HParams dashboard.
SESSION_STATUS = {
    "completed": api_pb2.STATUS_SUCCESS,
    "stopped_early": api_pb2.STATUS_SUCCESS,
    "diverged": api_pb2.STATUS_FAILURE,
    "failed": api_pb2.STATUS_FAILURE,
}


def fast_masked_crc32c(data: bytes) -> int:
    """TensorBoard's masked CRC32C (``tensorflow_stub.pywrap_tensorflow.masked_crc32c``) via google-crc32c."""
    import google_crc32c

    x = google_crc32c.value(bytes(data))
    return ((((x >> 15) | (x << 17)) & _MASK) + 0xA282EAD8) & _MASK


def use_fast_checksums() -> bool:
    """Swap in :func:`fast_masked_crc32c` (once per process); False when it cannot be done."""
    try:
        import google_crc32c
    except ImportError:
        return False
    if getattr(google_crc32c, "implementation", None) != "c" or not hasattr(record_writer, "masked_crc32c"):
        return False
    record_writer.masked_crc32c = fast_masked_crc32c
    return True


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` (same arguments), one event file per run (see the module docstring).

    It also writes, once per event file, the Custom Scalars dashboard's ``layout`` (the losses first,
    train and val on one chart), and the run's HParams entry (:meth:`log_hparams_entry`). Lightning's
    ``hparams.yaml`` is not written: the run directory's ``config.yaml`` holds the same config.

    Args:
        layout: the Custom Scalars dashboard, ``{category: {chart title: [tag regex, ...]}}``; every
            tag a regex matches is a line of that chart (categories and charts in this order).
        max_queue: events waiting for the writer thread (``SummaryWriter``'s 10 would make a block of
            per-step values wait for the disk).
    """

    def __init__(
        self, *args: Any, layout: Layout | None = None, max_queue: int = 1000, **kwargs: Any
    ) -> None:
        super().__init__(*args, max_queue=max_queue, **kwargs)
        self.tag_prefix = str(kwargs.get("prefix") or "")  # Lightning's argument: tags read <prefix>-<name>
        self.layout = {
            str(category): {str(title): [str(tag) for tag in tags] for title, tags in charts.items()}
            for category, charts in (layout or {}).items()
        }
        self._layout_written = False
        use_fast_checksums()

    def _write(self, summary: Summary, step: int | None) -> None:
        if self.layout and not self._layout_written:  # the Custom Scalars layout, before the first values
            self._layout_written = True
            self.experiment.add_custom_scalars(
                {
                    category: {title: ["Multiline", tags] for title, tags in charts.items()}
                    for category, charts in self.layout.items()
                }
            )
        self.experiment.file_writer.add_summary(summary, step)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Every scalar of one call in one event: the same tags, steps and values as ``add_scalar``."""
        scalars, rest = [], {}
        for name, value in metrics.items():
            if isinstance(value, Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                tag = f"{self.tag_prefix}{self.LOGGER_JOIN_CHAR}{name}" if self.tag_prefix else name
                scalars.append(Summary.Value(tag=tag, simple_value=float(value)))
            else:
                rest[name] = value  # dicts (add_scalars) and anything else: Lightning's way, and its error
        if scalars:
            self._write(Summary(value=scalars), step)
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
        """The run's row in the HParams dashboard: ``params`` (``shown`` ones marked ``differs``, which the
        dashboard displays first), the final ``metrics``, named ``trial_id`` (otherwise TensorBoard names the
        row by its run path, the same ``multirun/<time>`` prefix for every job of a sweep), ended with
        ``status``. The metrics are also written as scalars where the run wrote their last values: at
        ``step`` (epoch and test metrics), and one step before for the ``per_step`` ones (``train/loss``)."""
        last_step = {k: v for k, v in metrics.items() if k in per_step}
        if last_step:
            self.log_metrics(last_step, max(step - 1, 0))
        if len(last_step) < len(metrics):
            self.log_metrics({k: v for k, v in metrics.items() if k not in per_step}, step)
        columns = api_pb2.Experiment(
            hparam_infos=[
                api_pb2.HParamInfo(name=name, type=_data_type(value), differs=name in shown)
                for name, value in params.items()
            ],
            metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=name)) for name in metrics],
        )
        end = plugin_data_pb2.SessionEndInfo(
            status=SESSION_STATUS.get(str(status), api_pb2.STATUS_UNKNOWN), end_time_secs=time.time()
        )
        for summary in (
            _plugin_summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=columns)),
            summary_v2.hparams_pb(dict(params), trial_id=trial_id),
            _plugin_summary(
                metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)
            ),
        ):
            self._write(summary, step)

    @rank_zero_only
    def save(self) -> None:
        """Flush the events (Lightning's would also write ``hparams.yaml``, which config.yaml holds)."""
        self.experiment.flush()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """The end of a fit or test: flush the events; the run goes on in the same file (see ``close``)."""
        self.experiment.flush()

    @rank_zero_only
    def close(self) -> None:
        """The end of the run: close the event file."""
        self.experiment.close()


def _plugin_summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> Summary:
    data.version = metadata.PLUGIN_DATA_VERSION
    meta = metadata.create_summary_metadata(data)
    return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=metadata.NULL_TENSOR)])


def _data_type(value: Any) -> int:
    if isinstance(value, bool):
        return api_pb2.DATA_TYPE_BOOL
    if isinstance(value, (int, float)):
        return api_pb2.DATA_TYPE_FLOAT64
    return api_pb2.DATA_TYPE_STRING
