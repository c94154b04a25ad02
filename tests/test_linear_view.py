"""Which runs the closed form describes: ``linear_view`` accepts the linear model on MSE and nothing else,
and the diagnostics record the same numbers whether a step is kept as one flat vector (small models) or
as per-tensor norms (large ones)."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gdlab.callbacks import diagnostics
from gdlab.callbacks.linear import linear_view
from gdlab.data.linear import LinearDataModule
from gdlab.models.linear import LinearModel
from gdlab.train import train
from tests.conftest import make_cfg, scalars


class Held(nn.Module):
    """What ``linear_view`` reads of a LightningModule: its parameters, its forward and its ``loss_fn``."""

    def __init__(self, net: nn.Module, loss_fn: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net
        if loss_fn is not None:
            self.loss_fn = loss_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Squeezed(nn.Module):
    """A linear model that returns ``(n,)`` instead of ``(n, 1)``: still the linear model."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


class TwoInputs(nn.Module):
    """A model that cannot be called on the inputs alone."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * scale


D = 3


@pytest.fixture(scope="module")
def datamodule() -> LinearDataModule:
    dm = LinearDataModule(n_samples=200, n_features=D)
    dm.setup()
    return dm


def view_of(dm, module):
    return linear_view(SimpleNamespace(datamodule=dm), module)


@pytest.mark.parametrize("bias", [True, False])
def test_the_linear_model_on_mse_gets_the_closed_form_and_the_truth(datamodule, bias):
    net = LinearModel((D,), 1, bias=bias)
    view = view_of(datamodule, Held(net, nn.MSELoss()))
    assert view is not None and view.weight is net.linear.weight and view.bias is net.linear.bias
    assert view.reference is datamodule.closed_form(bias=bias)
    w = net.linear.weight.detach().double().T
    expected = w if not bias else torch.cat([w, net.linear.bias.detach().double().reshape(1, 1)])
    assert torch.equal(view.flat(), expected)  # [W^T; b], the reference's layout
    truth = datamodule.true_weights()
    want = truth["w"].double().reshape(D, 1)
    if bias:
        want = torch.cat([want, truth["b"].double().reshape(1, 1)])
    assert torch.equal(view.true_theta, want)


def test_an_output_of_another_shape_but_the_same_values_is_still_linear(datamodule):
    assert view_of(datamodule, Held(Squeezed(D), nn.MSELoss())) is not None


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(Held(nn.Sequential(nn.Linear(D, 1), nn.Tanh()), nn.MSELoss()), id="nonlinearity"),
        pytest.param(Held(nn.Linear(D, 1), nn.L1Loss()), id="not-mse"),
        pytest.param(Held(nn.Linear(D, 1)), id="no-loss"),
        pytest.param(Held(TwoInputs(D), nn.MSELoss()), id="cannot-be-called"),
        pytest.param(Held(nn.Sequential(nn.Linear(D, 4), nn.Linear(4, 1)), nn.MSELoss()), id="two-layers"),
    ],
)
def test_anything_but_the_linear_model_on_mse_gets_no_closed_form(datamodule, module):
    assert view_of(datamodule, module) is None


def test_a_run_without_a_datamodule_with_a_closed_form_gets_none():
    assert linear_view(SimpleNamespace(datamodule=None), Held(nn.Linear(D, 1), nn.MSELoss())) is None


def test_large_models_record_the_same_diagnostics_as_small_ones(tmp_path, monkeypatch):
    """Above ``FLAT_MAX`` parameters a step keeps per-tensor norms instead of whole vectors; both paths
    must log the same values (to float64 rounding) on the same run."""
    overrides = (
        "data.n_features=4",
        "data.n_samples=300",
        "trainer=cpu",
        "trainer.max_epochs=3",
        "callbacks.pictures=null",
    )
    runs = {}
    for flat_max in (diagnostics.FLAT_MAX, 0):
        monkeypatch.setattr(diagnostics, "FLAT_MAX", flat_max)
        out = tmp_path / f"flat_max_{flat_max}"
        record = train(make_cfg(out, *overrides))
        assert record["status"] == "completed"
        runs[flat_max] = out
    tags = [
        "diag/grad_norm",
        "diag/param_norm",
        "diag/update_norm",
        "diag/update_ratio",
        "diag/loss_gap",
        "diag/dist_to_optimum",
        "diag/dist_to_truth",
        "diag/lr",
    ]
    for tag in tags:
        flat, per_tensor = (scalars(runs[k], tag) for k in (diagnostics.FLAT_MAX, 0))
        assert len(flat) >= 3 and [s for s, _ in flat] == [s for s, _ in per_tensor], tag
        assert [v for _, v in per_tensor] == pytest.approx([v for _, v in flat], rel=1e-6, abs=1e-9), tag
