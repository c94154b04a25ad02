"""MLflow for gdlab runs: Lightning's ``MLFlowLogger``, the values of many steps in one write.

- **Batched writes.** Lightning's ``MLFlowLogger.log_metrics`` sends each call to MLflow as its own
  ``log_batch``: with the local SQLite store (``conf/logger/mlflow.yaml``) one transaction per optimizer
  step, 20-30 ms here, more than a whole small-model step. MLflow's own remedy (``synchronous=False``
  with ``MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS``) hangs at the end of the run in mlflow 3.18, and without
  the buffering its background threads still write one transaction per call. So :class:`MLFlowLogger`
  keeps the values and writes them in batches of up to MLflow's limit per ``log_batch``: whenever a full
  batch waits, and at a ``save()`` (which Lightning calls after each of its own writes: every validation
  and epoch end) once the oldest value has waited ``write_every`` seconds, so that a live MLflow UI lags
  by about that much and a run of short epochs does not pay a transaction per epoch; ``finalize`` writes
  the rest. The values are the ones Lightning's logger would write (same names, prefix, steps and
  timestamps): ``tests/test_integrations.py`` compares the two.
- **One process at a time creates the store.** The first runs of a parallel sweep
  (``hydra/launcher=joblib``) would all create the SQLite store's tables and the experiment at once, and
  all but one fail (``table experiments already exists``); both happen under an exclusive lock of the
  store's directory.
- **Nothing sent.** MLflow 3 reports usage to its telemetry service when it is imported (a look-up of
  ``config.mlflow-telemetry.io`` at the first run here); a local store should send nothing, so this logger
  sets MLflow's documented ``MLFLOW_DISABLE_TELEMETRY=true`` before MLflow is imported, unless it is set
  already (``MLFLOW_DISABLE_TELEMETRY=false`` keeps MLflow's telemetry).

It relies on MLflow's and Lightning's documented API only: ``MlflowClient.log_batch``,
``mlflow.entities.Metric``, and the logger's ``experiment``, ``run_id`` and ``LOGGER_JOIN_CHAR``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)

# MLflow's limit on the metrics of one log_batch.
MAX_METRICS_PER_BATCH = 1000
# Characters MLflow refuses in a metric name (Lightning's logger drops them the same way).
_NOT_IN_NAMES = re.compile(r"[^a-zA-Z0-9_/. -]+")


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's ``MLFlowLogger`` (same arguments) that writes metrics in batches (see the module
    docstring)."""

    def __init__(
        self,
        *args: Any,
        prefix: str = "",
        synchronous: bool | None = None,
        write_every: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if isinstance(write_every, bool) or not isinstance(write_every, (int, float)) or not write_every >= 0:
            raise ValueError(f"Invalid write_every: {write_every!r} (must be a number of seconds >= 0)")
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # read when mlflow is imported, below
        self._store_dir = sqlite_dir(kwargs.get("tracking_uri"))
        self._started = False  # the experiment looked up and the run started
        with self._store_lock():  # the client creates the SQLite store's tables
            super().__init__(*args, prefix=prefix, synchronous=synchronous, **kwargs)
        self.write_every = float(write_every)
        self._metric_prefix = prefix
        self._write_options = {} if synchronous is None else {"synchronous": synchronous}
        self._pending: list[Any] = []  # mlflow.entities.Metric, in the order logged
        self._oldest = 0.0  # time.monotonic() of the oldest pending value

    @property
    def experiment(self) -> Any:
        """Lightning's ``experiment`` (the ``MlflowClient``); the first access, which looks up or creates
        the experiment and starts the run, holds the store's lock."""
        if self._started:
            return super().experiment
        with self._store_lock():
            client = super().experiment
        self._started = True
        return client

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        """An exclusive lock of the SQLite store's directory (nothing for another tracking URI)."""
        if self._store_dir is None:
            yield
            return
        os.makedirs(self._store_dir, exist_ok=True)
        fd = os.open(self._store_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        if not self._pending:
            self._oldest = time.monotonic()
        for name, value in metrics.items():
            if isinstance(value, str):
                log.warning("Discarding metric with string value %s=%s.", name, value)
                continue
            if self._metric_prefix:
                name = f"{self._metric_prefix}{self.LOGGER_JOIN_CHAR}{name}"
            name = _NOT_IN_NAMES.sub("", name)
            self._pending.append(Metric(key=name, value=float(value), timestamp=timestamp_ms, step=step or 0))
        if len(self._pending) >= MAX_METRICS_PER_BATCH:
            self._write(MAX_METRICS_PER_BATCH)

    @rank_zero_only
    def save(self) -> None:
        """Write every value waiting, once the oldest has waited ``write_every`` seconds."""
        if self._pending and time.monotonic() - self._oldest >= self.write_every:
            self._write(1)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Write every value waiting, then end the run (Lightning's ``finalize``)."""
        self._write(1)
        super().finalize(status)

    def _write(self, at_least: int) -> None:
        """Send the waiting values in batches of MLflow's maximum while at least ``at_least`` wait."""
        while self._pending and len(self._pending) >= at_least:
            batch = self._pending[:MAX_METRICS_PER_BATCH]
            self.experiment.log_batch(run_id=self.run_id, metrics=batch, **self._write_options)
            del self._pending[: len(batch)]
        self._oldest = time.monotonic()


def sqlite_dir(tracking_uri: str | None) -> str | None:
    """The directory of a ``sqlite:///<path>`` store (``sqlite:///outputs/mlflow.db`` -> ``outputs``)."""
    if not tracking_uri or not str(tracking_uri).startswith("sqlite:///"):
        return None
    return os.path.dirname(str(tracking_uri)[len("sqlite:///") :]) or "."
