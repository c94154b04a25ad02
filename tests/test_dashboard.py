"""What TensorBoard shows of a run: the HParams entry (flat chosen keys, whole numbers as typed, a trial
ID a person tells apart, losses first) and the Custom Scalars layout (train and val loss on one chart),
all in the one event file of the run directory."""

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import metadata as custom_scalars
from tensorboard.plugins.hparams import metadata

from gdlab.runs.hparams import hparams_for, trial_id
from gdlab.train import train
from tests.conftest import make_cfg


def _events(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    return events


def _entry(run_dir):
    content = _events(run_dir).PluginTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content[metadata.EXPERIMENT_TAG])
    start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
    end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return experiment, start, end, values


def test_a_run_writes_its_flat_hparams_with_status(cfg_factory, tmp_path):
    cfg = cfg_factory("trainer.max_epochs=1", "data.n_samples=200", "callbacks=none", "optimizer.lr=0.07")
    assert train(cfg)["status"] == "completed"
    assert len(list(tmp_path.rglob("events.out.tfevents.*"))) == 1  # in the run dir itself: one TB run
    assert not (tmp_path / "hparams.yaml").exists()  # config.yaml holds the config
    experiment, start, end, hparams = _entry(tmp_path)
    # without a Hydra run (compose API) the groups are named by their classes
    assert hparams["data"] == "LinearDataModule" and hparams["model"] == "LinearModel"
    assert hparams["loss"] == "MSELoss" and hparams["optimizer"] == "PlainSGD"
    assert hparams["status"] == "completed" and end.status == 1  # STATUS_SUCCESS
    # the learning rate is a number (a range, a log axis); whole numbers read as typed, not 0.0000
    assert hparams["optimizer.lr"] == 0.07
    assert hparams["seed"] == "0" and hparams["data.batch_size"] == "64"
    assert hparams["trainer.max_epochs"] == "1"
    assert not any(
        k.startswith(("config", "trainer.", "callbacks")) for k in hparams if k != "trainer.max_epochs"
    )
    # losses first: TensorBoard displays the first five metrics
    tags = [m.name.tag for m in experiment.metric_infos]
    assert tags[:3] == ["train/loss", "val/loss", "test/loss"] and "val/r2" in tags
    assert start.group_name == tmp_path.name  # outside runs/ and multirun/: the directory's name


def test_the_custom_scalars_layout_opens_on_train_and_val_loss_in_one_chart(cfg_factory, tmp_path):
    train(cfg_factory("trainer.max_epochs=1", "data.n_samples=200"))
    (event,) = _events(tmp_path).Tensors(custom_scalars.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(event.tensor_proto.string_val[0])
    first = layout.category[0]
    assert first.title == "losses"
    assert list(first.chart[0].multiline.tag) == ["^train/loss$", "^val/loss$"]
    shown = {c.multiline.tag[0] for category in layout.category for c in category.chart}
    assert "^diag/grad_norm$" in shown  # present whenever the diagnostics run (the default)


def test_full_batch_and_lists_are_shown_as_text(cfg_factory):
    cfg = cfg_factory("data.batch_size=null", "model=mlp", "model.hidden_sizes=[8,4]", "optimizer.lr=1")
    params = hparams_for(cfg, status="diverged")
    assert params["data.batch_size"] == "full"  # full-batch gradient descent: the same text column
    assert params["optimizer.lr"] == 1.0 and isinstance(params["optimizer.lr"], float)
    assert params["status"] == "diverged"
    assert all(isinstance(v, (str, float, bool)) for v in params.values())


def test_trial_ids_start_with_what_tells_runs_apart(tmp_path):
    time = "2026-01-02_03-04-05-123456"
    sweep_job = make_cfg(tmp_path / "multirun" / time / "3_optimizer.lr-0.1_seed-0")
    assert trial_id(sweep_job) == f"3_optimizer.lr-0.1_seed-0 @ {time}"
    assert trial_id(make_cfg(tmp_path / "runs" / f"{time}_model-mlp")) == f"model-mlp @ {time}"
    assert trial_id(make_cfg(tmp_path / "runs" / time)) == f"defaults @ {time}"


def test_a_chosen_option_of_any_group_is_shown_by_its_name(typed):
    """`callbacks=minimal` on the command line is a column reading `minimal`, not the group's whole config."""
    params = hparams_for(typed("callbacks=minimal", "scheduler=step", "optimizer.lr=0.1"))
    assert params["callbacks"] == "minimal" and params["scheduler"] == "step"
    assert params["optimizer.lr"] == 0.1
