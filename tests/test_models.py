import pytest
import torch

from gdlab.models import MLP, LinearModel


def test_linear_model_is_one_linear_layer():
    m = LinearModel(input_shape=(4,), num_outputs=1)
    assert sum(p.numel() for p in m.parameters()) == 5
    assert m(torch.zeros(3, 4)).shape == (3, 1)


def test_models_flatten_images():
    x = torch.zeros(2, 1, 8, 8)
    assert LinearModel((1, 8, 8), 10)(x).shape == (2, 10)
    assert MLP((1, 8, 8), 10, hidden_sizes=[16])(x).shape == (2, 10)


def test_mlp_hidden_sizes_and_activation():
    m = MLP((3,), 2, hidden_sizes=[8, 4], activation="Tanh")
    linears = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(3, 8), (8, 4), (4, 2)]
    assert sum(isinstance(mod, torch.nn.Tanh) for mod in m.modules()) == 2


def test_mlp_unknown_activation():
    with pytest.raises(
        ValueError, match=r"^Invalid activation: 'Relu' is not a torch\.nn activation"
    ) as info:
        MLP((3,), 1, activation="Relu")
    assert info.value.argument == "activation"
