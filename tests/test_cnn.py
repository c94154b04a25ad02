"""model=cnn: layer sizes follow the image shape and the class count; non-image inputs are refused."""

import itertools

import pytest
import torch
from torch import nn

from gdlab.errors import ArgumentError
from gdlab.models import CNN


@pytest.mark.parametrize(
    ("shape", "pools"),
    [((1, 8, 8), 2), ((1, 28, 28), 2), ((3, 5, 7), 2), ((1, 3, 3), 1), ((2, 1, 1), 0)],
)
def test_layer_sizes_adapt_to_the_input_shape(shape, pools):
    net = CNN(shape, num_outputs=7, channels=[4, 6], hidden_size=16)
    assert net(torch.zeros(3, *shape)).shape == (3, 7)
    assert sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == pools  # pools only while H, W >= 2
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(shape[0], 4), (4, 6)]
    # the flattened size is what the conv stack really outputs: 6 channels x the pooled H x W
    h, w = shape[1] >> pools, shape[2] >> pools
    assert net.head[1].in_features == 6 * h * w


def test_gradient_descent_steps_lower_the_default_cnns_loss_on_digit_shaped_images():
    torch.manual_seed(0)
    net = CNN((1, 8, 8), 10)
    images, labels = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert net(images).shape == (64, 10)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())  # every layer learns
    assert all(b < a for a, b in itertools.pairwise(losses)) and losses[-1] < losses[0] - 0.05


def test_building_draws_the_same_random_numbers_as_its_layers_alone():
    """The dry run that measures the flattened size takes no randomness: seeding stays reproducible."""
    torch.manual_seed(0)
    a = CNN((1, 8, 8), 10)
    after_a = torch.rand(1)
    torch.manual_seed(0)
    b = CNN((1, 8, 8), 10)
    assert torch.equal(torch.rand(1), after_a)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize(
    ("kwargs", "argument", "match"),
    [
        (
            {"input_shape": (5,)},
            "input_shape",
            r"^Invalid input_shape: \(5,\) \(the CNN needs images: C, H, W\)",
        ),
        ({"channels": []}, "channels", r"^Invalid channels: \[\] \(must be a non-empty list"),
        ({"kernel_size": 4}, "kernel_size", r"^Invalid kernel_size: 4 \(must be an odd integer"),
        ({"hidden_size": 0}, "hidden_size", r"^Invalid hidden_size: 0 \(must be >= 1\)"),
        ({"activation": "relu"}, "activation", r"^Invalid activation: 'relu' is not a torch\.nn activation"),
    ],
)
def test_bad_settings(kwargs, argument, match):
    args = {"input_shape": (1, 8, 8), "num_outputs": 10, **kwargs}
    with pytest.raises(ArgumentError, match=match) as info:
        CNN(**args)
    assert info.value.argument == argument
