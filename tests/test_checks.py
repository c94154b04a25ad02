"""Start-up compatibility checks: every data x model x loss combination either trains or fails at once
with one line naming the settings as the user typed them and a fix."""

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import nn

from gdlab.errors import ConfigError
from gdlab.factory import build
from gdlab.train import train
from gdlab.validate import check_network_outputs
from tests.conftest import compose_config, run_train


@pytest.fixture
def typed(tmp_path):
    """``typed(*overrides)`` composes like ``python train.py`` does, Hydra's record of the chosen options
    included, so messages read ``loss=cross_entropy`` exactly as a user would see them."""

    def compose_as_cli(*overrides):
        cfg = compose_config("train", f"paths.output_dir={tmp_path}", *overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield compose_as_cli
    HydraConfig.instance().cfg = None


def config_error(excinfo) -> ConfigError:
    """The ConfigError behind an error (Hydra's instantiate wraps errors raised in constructors)."""
    err = excinfo.value
    while err is not None and not isinstance(err, ConfigError):
        err = err.__cause__
    assert err is not None, f"no ConfigError behind {excinfo.value!r}"
    assert "\n" not in str(err), str(err)
    return err


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["loss=cross_entropy"],
            "loss=cross_entropy needs classification data but data=linear is regression data: "
            "use loss=mse, or data=digits|fashion_mnist|mnist",
        ),
        (
            ["data=polynomial", "loss=cross_entropy"],
            "loss=cross_entropy needs classification data but data=polynomial is regression data",
        ),
        (
            ["model=cnn"],
            "model=cnn needs 3-dimensional inputs per sample (images: C, H, W) but data=linear gives "
            "input_shape=(5,): use model=linear|mlp, or image data",
        ),
        (
            ["data=digits", "+model.num_outputs=3"],
            "model.num_outputs=3 cannot match data=digits, which needs 10 outputs: remove model.num_outputs",
        ),
        (["data=polynomial", "data.degree=0"], "data.degree=0: Invalid degree: 0 (must be an integer >= 1"),
        (["data=digits", "data.val_fraction=0.5", "data.test_fraction=0.5"], "leaves no training data"),
        (
            ["data=digits", "data.test_fraction=0"],
            "data.test_fraction=0: Invalid test_fraction: 0 (must be strictly",
        ),
        (
            ["data=digits", "data.val_fraction=0.0002"],
            "data.val_fraction=0.0002: Invalid val_fraction: 0.0002 (leaves",
        ),
        (
            ["data=mnist", "data.val_fraction=1.0"],
            "data.val_fraction=1.0: Invalid val_fraction: 1.0 (must be strictly",
        ),
        (
            ["data=polynomial", "data.n_samples=3"],
            "data.n_samples=3: Invalid n_samples: 3 (too small for the splits",
        ),
        (
            ["data=digits", "data.batch_size=0"],
            "data.batch_size=0: Invalid batch_size: 0 (must be an integer >= 1",
        ),
        (
            ["model=cnn", "data=digits", "model.channels=[]"],
            "model.channels=[]: Invalid channels: [] (must be a non-empty",
        ),
    ],
)
def test_incompatible_settings_fail_before_training_in_one_line(typed, overrides, message):
    with pytest.raises(Exception) as info:
        build(typed(*overrides))
    assert message in str(config_error(info))


def test_without_hydra_runtime_the_message_names_the_target(cfg_factory):
    with pytest.raises(
        ConfigError, match=r"loss\._target_=gdlab\.losses\.CrossEntropyLoss needs classification"
    ):
        build(cfg_factory("loss=cross_entropy"))


def test_a_network_whose_output_size_cannot_match(typed):
    cfg = typed("data=digits")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    fixed = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))  # a hand-made network that ignores num_outputs
    with pytest.raises(
        ConfigError, match=r"outputs shape \(2, 3\) for a batch of 2 but data=digits needs \(2, 10\)"
    ):
        check_network_outputs(cfg, fixed, datamodule)
    wrong_input = nn.Linear(5, 10)  # expects 5 features, gets 8x8 images
    with pytest.raises(
        ConfigError, match=r"model=linear cannot take inputs of shape \(2, 1, 8, 8\) from data=digits"
    ):
        check_network_outputs(cfg, wrong_input, datamodule)


def test_the_output_check_changes_nothing(typed):
    """One forward pass in eval mode without gradients: no randomness drawn, no batch-norm statistics moved."""
    cfg = typed("data=digits")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    net = nn.Sequential(nn.Flatten(), nn.BatchNorm1d(64), nn.Dropout(0.5), nn.Linear(64, 10)).train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    check_network_outputs(cfg, net, datamodule)
    assert net.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())


COMBOS = [
    (d, m, lo)
    for d in ("linear", "polynomial", "digits")
    for m in ("linear", "mlp", "cnn")
    for lo in ("mse", "cross_entropy")
]


@pytest.mark.parametrize(("data", "model", "loss"), COMBOS, ids=["-".join(c) for c in COMBOS])
def test_every_data_model_loss_combination_trains_or_is_refused(cfg_factory, data, model, loss):
    """The design card's matrix: cross-entropy needs classes, the CNN needs images; everything else trains."""
    expect_ok = (loss != "cross_entropy" or data == "digits") and (model != "cnn" or data == "digits")
    cfg = cfg_factory(
        f"data={data}",
        f"model={model}",
        f"loss={loss}",
        "debug=fdr",
        "logger=none",
        "callbacks=none",
        "trainer=cpu",
    )
    if not expect_ok:
        with pytest.raises(ConfigError):
            build(cfg)
        return
    record = train(cfg)
    assert record["status"] == "completed"
    metric = "test/acc" if data == "digits" else "test/mse"
    assert torch.isfinite(torch.tensor(record[metric])), record


@pytest.mark.slow
def test_the_cli_prints_the_settings_as_typed(tmp_path):
    proc = run_train("loss=cross_entropy", f"paths.root={tmp_path}")
    assert proc.returncode != 0
    assert "loss=cross_entropy needs classification data but data=linear is regression data" in proc.stderr
