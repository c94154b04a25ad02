"""The TensorBoard HParams entry a run writes: flat chosen keys and its status, not the nested config."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata

from gdlab.runs.hparams import hparams_for
from gdlab.train import train


def _session(run_dir):
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent(metadata.PLUGIN_NAME)
    # Lightning's log_hyperparams: the experiment (columns and metrics), the session start and its end
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    assert {m.name.tag for m in experiment.metric_infos} >= {"train/loss", "val/loss", "test/loss"}
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    assert metadata.SESSION_END_INFO_TAG in content
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


def test_a_run_writes_its_flat_hparams_with_status(cfg_factory, tmp_path):
    cfg = cfg_factory("trainer.max_epochs=1", "data.n_samples=200", "callbacks=none", "optimizer.lr=0.07")
    assert train(cfg)["status"] == "completed"
    hparams = _session(tmp_path)
    # without a Hydra run (compose API) the groups are named by their classes
    assert hparams["data"] == "LinearDataModule" and hparams["model"] == "LinearModel"
    assert hparams["loss"] == "MSELoss" and hparams["optimizer"] == "PlainSGD"
    assert hparams["optimizer.lr"] == 0.07 and hparams["data.batch_size"] == 64 and hparams["seed"] == 0
    assert hparams["status"] == "completed"
    assert not any(
        k.startswith(("config", "trainer.", "callbacks")) for k in hparams if k != "trainer.max_epochs"
    )


def test_full_batch_and_lists_are_shown_as_text(cfg_factory):
    cfg = cfg_factory("data.batch_size=null", "model=mlp", "model.hidden_sizes=[8,4]")
    params = hparams_for(cfg, status="diverged")
    assert params["data.batch_size"] == "null"  # full-batch gradient descent stays visible
    assert params["status"] == "diverged"
    assert all(isinstance(v, (str, int, float, bool)) for v in params.values())
