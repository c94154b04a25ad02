"""gdlab.integrations: the only code that relies on a library's internals. Each test fails with a message that
says what an upgrade removed and which module to revisit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gdlab.integrations import tensorboard as tb_integration
from tests.conftest import scalars


def test_gdlabs_logger_checksums_every_event_record_with_google_crc32c(tmp_path, monkeypatch):
    """What the swap is for: each record gdlab's logger writes gets its two checksums (length and data)
    from google-crc32c's C code, counted through a spy on it."""
    import google_crc32c
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.summary.writer import record_writer

    assert hasattr(record_writer, "masked_crc32c"), (
        "tensorboard.summary.writer.record_writer.masked_crc32c is gone: gdlab.integrations.tensorboard "
        "can no longer speed up event files (TensorBoard still works, slower); revisit that module"
    )
    assert google_crc32c.implementation == "c", (
        "google-crc32c (a gdlab dependency) has no C implementation here"
    )
    real, calls = google_crc32c.value, []
    monkeypatch.setattr(google_crc32c, "value", lambda data: calls.append(len(data)) or real(data))
    logger = tb_integration.TensorBoardLogger(tmp_path, name="", version="")
    for step in range(10):
        logger.log_metrics({"train/loss": 1.0 / (step + 1), "diag/lr": 0.1}, step)
    logger.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    records = list(RawEventFileLoader(str(path)).Load())
    assert len(records) > 10 and len(calls) == 2 * len(records), (len(calls), len(records))
    assert calls.count(8) == len(records)  # one of each pair is the 8-byte length header


def test_fast_checksums_are_tensorboards_own():
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    for size in (0, 1, 7, 8, 40, 300, 4096):
        data = os.urandom(size)
        assert tb_integration.fast_masked_crc32c(data) == masked_crc32c(data), size


@pytest.mark.parametrize("missing", ["google_crc32c", "its C implementation"])
def test_without_the_fast_checksum_tensorboard_keeps_its_own(monkeypatch, missing):
    import sys
    import types

    from tensorboard.summary.writer import record_writer

    own = record_writer.masked_crc32c
    if missing == "google_crc32c":
        monkeypatch.setitem(sys.modules, "google_crc32c", None)  # `import google_crc32c` raises ImportError
    else:
        monkeypatch.setitem(sys.modules, "google_crc32c", types.SimpleNamespace(implementation="python"))
    monkeypatch.setattr(record_writer, "masked_crc32c", own)  # restored after the test either way
    assert tb_integration.use_fast_checksums() is False
    assert record_writer.masked_crc32c is own


def test_event_files_written_with_fast_checksums_read_back_with_tensorboards_checks(tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
    from torch.utils.tensorboard import SummaryWriter

    tb_integration.use_fast_checksums()
    writer = SummaryWriter(str(tmp_path))
    for step in range(20):
        writer.add_scalar("x", step * 0.5, step)
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    reader = PyRecordReader_New(str(path))  # verifies both checksums of every record
    records = 0
    while True:
        try:
            reader.GetNext()
        except Exception as end:  # OutOfRangeError at the end; DataLossError on a bad checksum
            assert type(end).__name__ == "OutOfRangeError", end
            break
        records += 1
    assert records == 21 == len(list(RawEventFileLoader(str(path)).Load()))  # the file-version record + 20


def test_lightning_still_closes_a_tensorboard_event_file_after_each_fit_and_test(tmp_path):
    """The reason gdlab's logger keeps its own finalize: Lightning's closes the writer at the end of every fit
    and test, so a run's final test opens a second event file. When this fails, Lightning keeps the file
    open itself: gdlab's finalize and close can go."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.loggers import TensorBoardLogger

    class LoggingModel(BoringModel):
        def training_step(self, batch, batch_idx):
            out = super().training_step(batch, batch_idx)
            self.log("train/loss", out["loss"])
            return out

        def test_step(self, batch, batch_idx):
            self.log("test/loss", self.step(batch))

    def run(logger) -> int:
        trainer = L.Trainer(
            max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, logger=logger,
            log_every_n_steps=1,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        model = LoggingModel()
        trainer.fit(model)
        trainer.test(model, verbose=False)
        if isinstance(logger, tb_integration.TensorBoardLogger):
            logger.close()
        return len(list(Path(logger.log_dir).glob("events.out.tfevents.*")))

    assert run(TensorBoardLogger(tmp_path / "lightning", name="", version="")) == 2, (
        "Lightning's TensorBoardLogger no longer opens a second event file after finalize: "
        "gdlab.integrations.tensorboard.TensorBoardLogger's finalize/close are no longer needed"
    )
    assert run(tb_integration.TensorBoardLogger(tmp_path / "gdlab", name="", version="")) == 1


def test_lightnings_fit_loop_still_says_which_epoch_a_run_resumed_in(tmp_path):
    """gdlab.integrations.lightning.resumed_this_epoch reads ``trainer.fit_loop.restarting``: True at the end
    of the epoch a run resumed in from a checkpoint taken mid-epoch, False in a fresh run and in later epochs."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from gdlab.integrations.lightning import resumed_this_epoch

    class Record(L.Callback):
        def __init__(self):
            self.seen = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (trainer.current_epoch, batch_idx) == (1, 0) and not trainer.ckpt_path:
                trainer.save_checkpoint(tmp_path / "mid_epoch.ckpt")

        def on_train_epoch_end(self, trainer, pl_module):
            self.seen.append((trainer.current_epoch, resumed_this_epoch(trainer)))

    def fit(max_epochs: int, ckpt_path=None) -> list:
        record = Record()
        trainer = L.Trainer(
            max_epochs=max_epochs, limit_train_batches=3, limit_val_batches=1, logger=False, callbacks=[record],
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        trainer.fit(BoringModel(), ckpt_path=ckpt_path)
        return record.seen

    try:
        assert fit(3) == [(0, False), (1, False), (2, False)]
        assert fit(3, tmp_path / "mid_epoch.ckpt") == [(1, True), (2, False)], (
            "Lightning's fit_loop.restarting no longer marks the epoch a run resumed in: "
            "gdlab.integrations.lightning.resumed_this_epoch (the plateau step of gdlab.runs.checkpoint) needs another way"
        )
    except AttributeError as missing:
        raise AssertionError(
            f"Lightning's fit loop has no `restarting` any more ({missing}): gdlab.integrations.lightning "
            "(the plateau step of a resumed epoch, gdlab.runs.checkpoint) needs another way to tell"
        ) from missing


def test_a_summary_writer_still_takes_summaries_through_its_file_writer(tmp_path):
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    assert hasattr(writer, "file_writer") and hasattr(writer.file_writer, "add_summary"), (
        "torch's SummaryWriter no longer has file_writer.add_summary: gdlab.integrations.tensorboard writes "
        "a step's scalars and the HParams entry through it; revisit that module"
    )
    writer.file_writer.add_summary(Summary(value=[Summary.Value(tag="a", simple_value=1.5)]), 3)
    writer.close()
    assert scalars(tmp_path, "a") == [(3, 1.5)]


def test_the_hparams_entry_reads_back_through_tensorboards_own_plugin(tmp_path):
    """The three summaries gdlab builds (columns marked to show first, the row named by its trial ID, how
    the session ended) as TensorBoard's HParams plugin reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import api_pb2, metadata

    logger = tb_integration.TensorBoardLogger(tmp_path, name="", version="")
    params = {"optimizer.lr": 0.1, "seed": "3", "full": True}
    logger.log_hparams_entry(params, {"val/loss": 0.5}, 7, "lr-0.1 @ t", "diverged", shown=["optimizer.lr"])
    logger.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert [(i.name, i.differs) for i in experiment.hparam_infos] == [
        ("optimizer.lr", True), ("seed", False), ("full", False)
    ]  # fmt: skip
    assert [m.name.tag for m in experiment.metric_infos] == ["val/loss"]
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert start.group_name == "lr-0.1 @ t"
    assert start.hparams["optimizer.lr"].number_value == 0.1 and start.hparams["seed"].string_value == "3"
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    assert end.status == api_pb2.STATUS_FAILURE
    assert scalars(tmp_path, "val/loss") == [(7, 0.5)]


def test_hydras_basic_sweeper_still_validates_each_batch_where_gdlabs_sweeper_skips_it():
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's plugin scan, which runs the plugin modules again, before the classes are taken
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from hydra_plugins.gdlab_plugins.vectorized_launcher import GdlabSweeper

    assert callable(getattr(BasicSweeper, "validate_batch_is_legal", None)), (
        "Hydra's BasicSweeper.validate_batch_is_legal is gone: gdlab.integrations.hydra_sweeper (hydra/sweeper="
        "gdlab) overrides it; revisit that module"
    )
    assert issubclass(GdlabSweeper, BasicSweeper)

    class VectorizedLauncher:  # what the sweeper looks at: the launcher's class name
        pass

    sweeper = GdlabSweeper(max_batch_size=None, params=None)
    sweeper.launcher = VectorizedLauncher()
    sweeper.validate_batch_is_legal([["no_such_key=1"]])  # not composed here: the launcher composes it
    sweeper.launcher = object()
    with pytest.raises(AttributeError):  # the basic sweeper's own check runs (set up, it composes each job)
        sweeper.validate_batch_is_legal([["no_such_key=1"]])


@pytest.mark.slow
def test_gdlabs_mlflow_logger_writes_what_lightnings_writes_in_fewer_transactions(monkeypatch, tmp_path):
    """gdlab.integrations.mlflow keeps the values of many steps for one log_batch; MLflow's client reads
    back the same names, steps and values as from Lightning's own logger, which writes each call."""
    pytest.importorskip("mlflow", reason="needs the loggers extra: pip install -e '.[loggers]'")
    from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
    from mlflow.tracking import MlflowClient

    from gdlab.integrations.mlflow import MAX_METRICS_PER_BATCH, MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # a store that opens at once; any store will do
    uri = f"file:{tmp_path}/mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # Lightning's logger sets it; unset again after the test
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "")
    monkeypatch.delenv("MLFLOW_DISABLE_TELEMETRY")  # as on a user's machine; restored after the test
    writes = []
    log_batch = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda *a, **k: writes.append(k) or log_batch(*a, **k))
    rows = [({"train/loss": 1 / (s + 1), "diag/x (norm)": float(s), "note": "text"}, s) for s in range(550)]
    histories, calls = [], []
    for cls, options in ((LightningMLFlowLogger, {}), (MLFlowLogger, {"write_every": 3600})):
        writes.clear()
        logger = cls(experiment_name="x", tracking_uri=uri, prefix="p", synchronous=True, **options)
        if cls is MLFlowLogger:  # a local store sends nothing: MLflow's usage telemetry is off
            assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
        for metrics, step in rows:
            logger.log_metrics(metrics, step)
        logger.save()  # within write_every of the oldest value: gdlab's keeps them
        logger.log_metrics({"val/loss": 0.5}, 550)
        logger.finalize("success")
        client = MlflowClient(uri)
        run = client.get_run(logger.run_id)
        assert run.info.status == "FINISHED"
        keys = sorted(run.data.metrics)
        histories.append(
            {k: [(m.step, m.value) for m in client.get_metric_history(logger.run_id, k)] for k in keys}
        )
        calls.append(len([w for w in writes if w.get("metrics")]))
    lightning, gdlab = histories
    assert sorted(lightning) == ["p-diag/x norm", "p-train/loss", "p-val/loss"]  # the text value dropped
    assert gdlab == lightning, (
        "gdlab.integrations.mlflow.MLFlowLogger no longer writes what Lightning's MLFlowLogger writes: compare "
        "its log_metrics with lightning.pytorch.loggers.MLFlowLogger.log_metrics"
    )
    assert calls == [551, -(-1101 // MAX_METRICS_PER_BATCH)]  # one write per call against full batches
    # write_every=0: each save() (Lightning's, after every validation and epoch end) writes what waits
    writes.clear()
    logger = MLFlowLogger(experiment_name="x", tracking_uri=uri, write_every=0)
    logger.log_metrics({"train/loss": 1.0}, 0)
    logger.save()
    assert [len(w["metrics"]) for w in writes if w.get("metrics")] == [1]
    logger.finalize("success")
