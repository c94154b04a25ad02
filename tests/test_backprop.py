"""gdlab.analysis.backprop: the backward pass of Linear -> activation -> Linear, written out with the chain
rule, equals autograd on gdlab's own MLP (with gdlab's losses) in float64, for MSE and cross-entropy."""

import re

import pytest
import torch

from gdlab import analysis
from gdlab.losses import CrossEntropyLoss, MSELoss
from gdlab.models.mlp import MLP
from tests.conftest import REPO_ROOT

EXACT = {"rtol": 1e-12, "atol": 1e-12}
SHAPES = [(2, 1, 3, 2), (7, 3, 5, 2), (64, 4, 16, 3), (33, 10, 8, 10)]  # (m, d, hidden, k)
CASES = [(*shape, loss) for shape in SHAPES for loss in ("mse", "cross_entropy")] + [(50, 2, 8, 1, "mse")]


def _problem(m, d, hidden, k, loss, activation, seed=0):
    """gdlab's MLP with one hidden layer (float64), a batch, and targets of the loss's kind."""
    torch.manual_seed(seed)
    net = MLP(input_shape=(d,), num_outputs=k, hidden_sizes=[hidden], activation=activation).double()
    X = torch.randn(m, d, dtype=torch.float64)
    y = torch.randint(0, k, (m,)) if loss == "cross_entropy" else torch.randn(m, k, dtype=torch.float64)
    return net, X, y


def _autograd(net, X, y, loss):
    """The loss gdlab trains with on ``net(X)``, and its gradient by autograd: (W1, b1, W2, b2) in the
    (in, out) orientation analysis uses, plus dL/dlogits."""
    first, _act, second = net.net
    logits = net(X)
    value = (CrossEntropyLoss() if loss == "cross_entropy" else MSELoss())(logits, y)
    grads = torch.autograd.grad(value, [first.weight, first.bias, second.weight, second.bias, logits])
    dW1, db1, dW2, db2, dlogits = grads
    return value, dW1.T, db1, dW2.T, db2, dlogits


@pytest.mark.parametrize(("m", "d", "hidden", "k", "loss"), CASES)
def test_backprop_equals_autograd_on_gdlabs_mlp(m, d, hidden, k, loss):
    net, X, y = _problem(m, d, hidden, k, loss, "ReLU")
    first, _act, second = net.net
    out = analysis.backprop(first.weight.T, first.bias, second.weight.T, second.bias, X, y, loss=loss)
    value, dW1, db1, dW2, db2, dlogits = _autograd(net, X, y, loss)
    torch.testing.assert_close(out.logits, net(X), **EXACT)
    torch.testing.assert_close(out.loss, value, **EXACT)
    for name, expected in [("d_logits", dlogits), ("d_W2", dW2), ("d_b2", db2), ("d_W1", dW1), ("d_b1", db1)]:
        got = getattr(out, name)
        assert got.shape == expected.shape, name
        torch.testing.assert_close(got, expected, **EXACT, msg=name)
    assert out.d_W1.abs().max() > 0  # a live hidden layer: the check covers the whole chain


@pytest.mark.parametrize("activation", sorted(analysis.ACTIVATIONS))
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_every_activation_the_mlp_offers_back_propagates_like_autograd(activation, loss):
    net, X, y = _problem(20, 3, 6, 4, loss, activation, seed=1)
    first, act, second = net.net
    assert type(act).__name__ == activation  # the same function on both sides
    out = analysis.backprop(
        first.weight.T, first.bias, second.weight.T, second.bias, X, y, loss=loss, activation=activation
    )
    _value, dW1, db1, dW2, db2, _dlogits = _autograd(net, X, y, loss)
    torch.testing.assert_close(out.h, act(first(X)), **EXACT)
    for got, expected in [(out.d_W1, dW1), (out.d_b1, db1), (out.d_W2, dW2), (out.d_b2, db2)]:
        torch.testing.assert_close(got, expected, **EXACT)


def test_each_intermediate_gradient_is_autograds_at_that_layer():
    """dL/dh and dL/dz, the two steps inside the chain, against autograd on the cached tensors."""
    net, X, y = _problem(16, 3, 5, 2, "mse", "Tanh", seed=2)
    first, act, second = net.net
    z = first(X)
    h = act(z)
    value = MSELoss()(second(h), y)
    dz, dh = torch.autograd.grad(value, [z, h])
    out = analysis.backprop(first.weight.T, first.bias, second.weight.T, second.bias, X, y, activation="Tanh")
    torch.testing.assert_close(out.z, z, **EXACT)
    torch.testing.assert_close(out.d_h, dh, **EXACT)
    torch.testing.assert_close(out.d_z, dz, **EXACT)


def test_mse_on_class_targets_back_propagates_through_one_hot_targets():
    """gdlab's MSELoss one-hot encodes integer classes; the written-out pass does the same."""
    net, X, _ = _problem(12, 3, 4, 5, "mse", "ReLU", seed=3)
    classes = torch.randint(0, 5, (12,))
    first, _act, second = net.net
    out = analysis.backprop(first.weight.T, first.bias, second.weight.T, second.bias, X, classes)
    _value, dW1, db1, dW2, db2, _dlogits = _autograd(net, X, classes, "mse")
    for got, expected in [(out.d_W1, dW1), (out.d_b1, db1), (out.d_W2, dW2), (out.d_b2, db2)]:
        torch.testing.assert_close(got, expected, **EXACT)


def test_unknown_loss_or_activation_is_refused_by_name():
    W, b, X, y = torch.ones(2, 2), torch.zeros(2), torch.ones(3, 2), torch.ones(3, 2)
    with pytest.raises(ValueError, match=r"Invalid loss: 'huber' \(expected 'mse' or 'cross_entropy'\)"):
        analysis.backprop(W, b, W, b, X, y, loss="huber")
    with pytest.raises(ValueError, match=r"Invalid activation: 'Softplus' \(expected one of ReLU, Tanh"):
        analysis.backprop(W, b, W, b, X, y, activation="Softplus")


def test_the_documented_example_prints_what_the_docs_show(capsys):
    """docs/gradient-descent.md's back-propagation snippet, run as written: its output is the one shown."""
    text = (REPO_ROOT / "docs" / "gradient-descent.md").read_text()
    section = text.split("## Back-propagation, written out", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```python\n.*?```\s*```text\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "docs/gradient-descent.md", "exec"), {})
    assert capsys.readouterr().out == shown
