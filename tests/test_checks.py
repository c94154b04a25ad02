"""Start-up compatibility checks: every data x model x loss combination either trains or fails at once
with one line naming the settings as the user typed them and a fix."""

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from gdlab.errors import ConfigError
from gdlab.factory import build
from gdlab.validate import check_network_outputs
from tests.conftest import train_in_process


def config_error(excinfo) -> ConfigError:
    """The ConfigError behind an error (Hydra's instantiate wraps errors raised in constructors)."""
    err = excinfo.value
    while err is not None and not isinstance(err, ConfigError):
        err = err.__cause__
    assert err is not None, f"no ConfigError behind {excinfo.value!r}"
    assert "\n" not in str(err), str(err)
    return err


# (overrides, the setting the one line must name as typed: `setting=value`, and the other it does not fit)
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["loss=cross_entropy"], ["loss=cross_entropy", "data=linear"]),
        (["data=polynomial", "loss=cross_entropy"], ["loss=cross_entropy", "data=polynomial"]),
        (["model=cnn"], ["model=cnn", "data=linear"]),
        (["data=digits", "+model.num_outputs=3"], ["model.num_outputs=3", "data=digits"]),
        (["data=polynomial", "data.degree=0"], ["data.degree=0"]),
        (["data=digits", "data.val_fraction=0.5", "data.test_fraction=0.5"], ["data.val_fraction=0.5"]),
        (["data=digits", "data.test_fraction=0"], ["data.test_fraction=0"]),
        (["data=digits", "data.val_fraction=0.0002"], ["data.val_fraction=0.0002"]),
        (["data=mnist", "data.val_fraction=1.0"], ["data.val_fraction=1.0"]),
        (["data=polynomial", "data.n_samples=3"], ["data.n_samples=3"]),
        (["data=digits", "data.batch_size=0"], ["data.batch_size=0"]),
        (["model=cnn", "data=digits", "model.channels=[]"], ["model.channels=[]"]),
    ],
)
def test_incompatible_settings_fail_before_training_in_one_line(typed, overrides, named):
    with pytest.raises(Exception) as info:
        build(typed(*overrides))
    line = str(config_error(info))
    assert all(setting in line for setting in named), line


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


@pytest.mark.slow
def test_the_cli_prints_the_settings_as_typed(monkeypatch, capsys, tmp_path):
    assert train_in_process(monkeypatch, "loss=cross_entropy", f"paths.root={tmp_path}") == 1
    err = capsys.readouterr().err
    assert "loss=cross_entropy needs classification data but data=linear is regression data" in err
